"""SafeRoute: safe-migration guidance and help for people in the Mekong region."""
