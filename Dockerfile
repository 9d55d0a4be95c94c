# SafeRoute's image: `docker build -t saferoute .`; with PostgreSQL and two workers: compose.yaml.

# Build stage: wheels for the bot and every dependency (PyICU compiles against ICU here, with a
# compiler the final image does not carry).
FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends g++ libicu-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY storage ./storage
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Run stage: the dependencies, the code and its content, ICU's runtime library; not root.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends libicu72 && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 saferoute
COPY --from=build /wheels /wheels
# The project's own wheel is only the way to its dependencies: the code runs from /app.
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl && pip uninstall -y saferoute && rm -rf /wheels
WORKDIR /app
COPY bot ./bot
COPY storage ./storage
COPY flows ./flows
COPY locales ./locales
RUN mkdir -p /app/data && chown saferoute /app/data
USER saferoute
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 API_HOST=0.0.0.0 API_PORT=8080 LOG_FORMAT=json
EXPOSE 8080
# Migrations run at start (the first worker migrates; the others wait for it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"
# Telegram when TELEGRAM_BOT_TOKEN is set; `docker run -it saferoute chat` for the terminal chat.
ENTRYPOINT ["python", "-m", "bot"]
CMD ["run"]
