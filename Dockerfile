FROM python:3.11-slim

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

# PyICU (word breaks for Khmer, Lao and Thai) compiles against the system's ICU.
RUN apt-get update && apt-get install -y --no-install-recommends libicu-dev pkg-config g++ && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY storage ./storage
COPY flows ./flows
COPY locales ./locales
RUN pip install --no-cache-dir -e . && useradd --create-home saferoute && mkdir -p /app/data && chown saferoute /app/data
USER saferoute

# Telegram when TELEGRAM_BOT_TOKEN is set; `docker run -it … chat` for the terminal chat.
ENTRYPOINT ["python", "-m", "bot"]
CMD ["run"]
