"""``plugboard init --features``: the seed's feature sets as plugins, settings and env vars.

Each :class:`Feature` names the plugin that provides it, the commented
defaults ``init`` writes into settings.yaml for it (the seed's configuration
interface in our keys) and the seed's environment variables it reads, which go
into ``.env.example``. A feature whose plugin is not installed yet is still
written, its ``plugins:`` entry commented out with the reason, so the project
starts on embedded defaults and the deployer sees what to install.
"""

from __future__ import annotations

import re

from typing import Mapping

import attrs


@attrs.define(frozen=True, kw_only=True)
class Feature:
    name: str
    #: The plugin to declare under ``plugins:``.
    plugin: str
    #: What the feature is, for the ``plugins:`` comment and the prompt.
    summary: str
    #: Commented YAML, the plugin's section with its defaults ("" for none).
    settings: str = ""
    #: The seed's variables (name, example value), for ``.env.example``.
    env: tuple[tuple[str, str], ...] = ()
    #: The pip extras its optional providers need.
    extras: tuple[str, ...] = ()


_UPLOADS = """\
# File uploads (the uploads plugin): the GraphQL multipart request spec,
# stored through a storage service (services.storage) or a provider here.
# uploads:
#   provider: local        # local | s3 | gcs | cloudinary (or UPLOAD_PROVIDER); s3/gcs: pip install 'plugboard[s3]' / 'plugboard[gcs]'
#   max_file_size: 10MB
#   allowed_types: ["image/*", "application/pdf"]
#   image_optimization:    # Pillow: pip install 'plugboard[images]'
#     enabled: true
#     formats: [webp, avif, jpg]
#     quality: 80
#   s3: {bucket: your-bucket, region: us-east-1}   # or AWS_S3_BUCKET, AWS_S3_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
#   cloudinary: {url: null}                        # or CLOUDINARY_URL
"""

_EMAIL = """\
# Email (the email plugin): templates, sending through a mailer service
# (services.mailer) or a provider here; pip install 'plugboard[email]'.
# email:
#   provider: smtp         # smtp | sendgrid | mailgun | ses (or EMAIL_PROVIDER)
#   templates: {welcome: true, password_reset: true, verification: true}
#   features: {bounce: true, unsubscribe: true, analytics: false}
#   smtp: {host: localhost, port: 587, user: null, password: null}   # or SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_PASS
#   sendgrid: {api_key: null}                                        # or SENDGRID_API_KEY
"""

_CACHE = """\
# Caching (the cache plugin): query results in memory, or in Redis (redis.url)
# across instances; CDN purges.
# cache:
#   redis: {enabled: false, ttl: 1h}
#   query_cache: {enabled: true, ttl: 60s}
#   cdn_integration: none  # cloudflare | aws | none
"""

_PROTECTION = """\
# Rate limiting and API protection: per-IP / per-user request limits, query
# complexity and depth limits, API keys.
# protection:
#   requests: {window_ms: 900000, max: 100, skip_failed_requests: false}   # or RATE_LIMIT_WINDOW_MS, RATE_LIMIT_MAX, RATE_LIMIT_SKIP_FAILED_REQUESTS
#   graphql: {max_complexity: 1000, max_depth: 10}
#   api_keys: false
"""

_REALTIME = """\
# Real-time (the realtime plugin): GraphQL subscriptions over WebSocket
# (graphql-transport-ws, legacy graphql-ws) and SSE (graphql-sse, also on
# <graphql.path>/stream), presence, chat, notifications. Events cross
# instances with services: {pubsub: {provider: redis}} and redis.url.
# realtime:
#   subscriptions: true
#   websockets: true
#   server_sent_events: true
#   features: {presence: true, chat: true, notifications: true}
#   websocket: {keepalive: 12s, max_connections_per_ip: 100, max_subscriptions_per_connection: 100}
#   sse: {keepalive: 15s, max_connections_per_ip: 100, path: null}   # path null: <graphql.path>/stream
#   channels: {enabled: true, events_path: /events, ws_path: /ws}
"""

FEATURES: Mapping[str, Feature] = {
    f.name: f
    for f in (
        Feature(
            name="uploads",
            plugin="uploads",
            summary="file uploads: local, S3, GCS, Cloudinary; image processing",
            settings=_UPLOADS,
            env=(
                ("UPLOAD_PROVIDER", "s3"),
                ("AWS_S3_BUCKET", "your-bucket"),
                ("AWS_S3_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "your-key"),
                ("AWS_SECRET_ACCESS_KEY", "your-secret"),
                ("CLOUDINARY_URL", "cloudinary://your-url"),
            ),
            extras=("s3", "gcs", "images"),
        ),
        Feature(
            name="email",
            plugin="email",
            summary="email: templates, SMTP, SendGrid, Mailgun, SES",
            settings=_EMAIL,
            env=(
                ("EMAIL_PROVIDER", "sendgrid"),
                ("SENDGRID_API_KEY", "your-sendgrid-key"),
                ("SMTP_HOST", "smtp.gmail.com"),
                ("SMTP_PORT", "587"),
                ("SMTP_USER", "your-email"),
                ("SMTP_PASS", "your-password"),
            ),
            extras=("email",),
        ),
        Feature(
            name="jobs",
            plugin="jobs",
            summary="background jobs: brokers, workers, cron schedules, retries, job records",
            # Its commented section is part of every settings.yaml init writes.
            env=(("REDIS_URL", "redis://localhost:6379"), ("QUEUE_CONCURRENCY", "5"), ("QUEUE_DASHBOARD", "true")),
        ),
        Feature(
            name="cache",
            plugin="cache",
            summary="caching: query results in memory or Redis, CDN purges",
            settings=_CACHE,
            env=(("REDIS_URL", "redis://localhost:6379"),),
        ),
        Feature(
            name="protection",
            plugin="protection",
            summary="rate limiting, query complexity and depth limits, API keys",
            settings=_PROTECTION,
            env=(("RATE_LIMIT_WINDOW_MS", "900000"), ("RATE_LIMIT_MAX", "100"), ("RATE_LIMIT_SKIP_FAILED_REQUESTS", "true")),
        ),
        Feature(
            name="realtime",
            plugin="realtime",
            summary="subscriptions (WebSocket, SSE), pub/sub, presence, chat, notifications",
            settings=_REALTIME,
            env=(("REDIS_URL", "redis://localhost:6379"),),
        ),
    )
}


class UnknownFeature(ValueError):
    """``init --features`` named a feature that does not exist; the message lists the known ones."""


def parse_features(text: str) -> list[Feature]:
    """``"uploads, email"`` -> the features, in the order given, once each; UnknownFeature names the bad ones."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise UnknownFeature(
            f"unknown feature{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"known features: {', '.join(FEATURES)}"
        )
    return [FEATURES[n] for n in dict.fromkeys(names)]


def plugins_block(features: list[Feature], installed: set[str]) -> str:
    """The ``plugins:`` list; a plugin not installed is commented out, saying so."""
    if not features:
        return "plugins: []\n"
    lines = ["plugins:"]
    for f in features:
        if f.plugin in installed:
            lines.append(f"  - {f.plugin:<20} # {f.summary}")
        else:
            lines.append(
                f"  # - {f.plugin:<18} # {f.summary}\n"
                f"  #   (not installed: install the plugin providing {f.plugin!r}, then uncomment this line)"
            )
    return "\n".join(lines) + "\n"


def settings_sections(features: list[Feature], template: str = "") -> str:
    """The commented settings of each feature whose section ``template`` does not already show."""
    def shown(f: Feature) -> bool:
        return re.search(rf"^(# )?{re.escape(f.plugin)}:", template, re.M) is not None

    return "\n".join(f.settings for f in features if f.settings and not shown(f))


def env_example(features: list[Feature]) -> str:
    """``.env.example``: the seed's variables for the chosen features, each once."""
    out = [
        "# The seed's environment variables for the features chosen with `plugboard init`.",
        "# Copy to .env (or set them in the environment); each is an alias of a settings",
        "# key (env_aliases in settings.yaml). Unset, the embedded defaults apply.",
    ]
    seen: set[str] = set()
    for f in features:
        fresh = [(k, v) for k, v in f.env if k not in seen]
        if not fresh:
            continue
        out.append(f"\n# {f.name} ({f.summary})")
        for key, value in fresh:
            out.append(f"{key}={value}")
            seen.add(key)
    return "\n".join(out) + "\n"
