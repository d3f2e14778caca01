# budgetloop: one image for the API (`serve`), the scheduler (`worker`) and the sandbox ad platforms.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (pinned), so code changes do not reinstall them.
COPY requirements.lock ./
RUN python -m pip install -r requirements.lock

COPY pyproject.toml README.md alembic.ini ./
COPY budgetloop ./budgetloop
COPY models ./models
COPY guardrails ./guardrails
COPY connectors ./connectors
COPY agents ./agents
COPY service ./service
COPY migrations ./migrations
COPY examples ./examples
RUN python -m pip install --no-deps --no-build-isolation . \
    && useradd --system --create-home --uid 10001 budgetloop \
    && mkdir -p /app/var && chown budgetloop /app/var

USER budgetloop
ENV BUDGETLOOP_ENVIRONMENT=production \
    XLA_FLAGS=--xla_force_host_platform_device_count=2

EXPOSE 8000 8765
# Migrations are applied by every command on start; see docker-compose.yml for the services.
CMD ["budgetloop", "serve", "--host", "0.0.0.0", "--port", "8000"]
