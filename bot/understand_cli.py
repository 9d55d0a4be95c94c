"""`python -m bot understand`: why the bot answered what it did, and how well it reads."""

from __future__ import annotations

import argparse
import json
import sys

from bot.engine.understand import Understander, evaluate
from bot.settings import PROJECT_ROOT, Settings

EVAL_SET = PROJECT_ROOT / "tests" / "understanding"
ACCURACY_TARGET = 0.85
DANGER_TARGET = 0.95


def run_understand(args: argparse.Namespace, settings: Settings) -> int:
    understander = Understander.from_dir(settings.flows_dir / "understanding")
    if args.eval is not None:
        results = evaluate(understander, args.eval)
        print(f"{'language':<9}{'phrases':>8}{'accuracy':>10}{'danger recall':>15}{'danger unknown':>16}")
        ok = True
        for r in results:
            print(f"{r.lang:<9}{r.total:>8}{r.accuracy:>10.3f}{r.danger_recall:>15.3f}{r.danger_unknown:>16}")
            ok &= r.accuracy >= ACCURACY_TARGET and r.danger_recall >= DANGER_TARGET and r.danger_unknown == 0
            if args.misses:
                for text, expected, got in r.misses:
                    print(f"    {expected:>13} -> {got:<13} {text}")
        print(f"targets: accuracy >= {ACCURACY_TARGET} in every language, danger recall >= {DANGER_TARGET}, "
              f"no danger phrase unknown: {'met' if ok else 'NOT met'}")
        return 0 if ok else 1
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text in texts:
        print(json.dumps(understander.understand(text, args.lang).as_json(), ensure_ascii=False))
    return 0
