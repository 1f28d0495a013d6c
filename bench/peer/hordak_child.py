"""Runs inside the benchmark's own django-hordak environment (no smsledger import): posts N
two-leg transactions through hordak's API, one per database transaction and then in batches,
and prints the rates as JSON.

    python hordak_child.py POSTGRES_URL N BATCH
"""

from __future__ import annotations

import json
import sys
import time
from decimal import Decimal
from importlib.metadata import version
from urllib.parse import urlparse


def configure(url: str) -> None:
    import django
    from django.conf import settings

    parts = urlparse(url)
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": parts.path.lstrip("/"),
                "USER": parts.username or "",
                "PASSWORD": parts.password or "",
                "HOST": parts.hostname or "",
                "PORT": str(parts.port or ""),
            }
        },
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "mptt", "hordak"],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
        HORDAK_DECIMAL_PLACES=6,
    )
    django.setup()


def main() -> None:
    url, total, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    configure(url)
    from django.core.management import call_command
    from django.db import transaction
    from hordak.models import Account
    from moneyed import Money

    call_command("migrate", verbosity=0)
    unbilled = Account.objects.create(name="unbilled", type=Account.TYPES.asset, currencies=["USD"])
    revenue = Account.objects.create(name="revenue", type=Account.TYPES.income, currencies=["USD"])
    amount = Money(Decimal("0.0075"), "USD")

    started = time.perf_counter()
    for _ in range(total):
        with transaction.atomic():
            revenue.transfer_to(unbilled, amount)
    singles = total / (time.perf_counter() - started)

    started = time.perf_counter()
    for _ in range(0, total, batch):
        with transaction.atomic():
            for _ in range(batch):
                revenue.transfer_to(unbilled, amount)
    batched = total / (time.perf_counter() - started)
    versions = {name: version(name) for name in ("django-hordak", "Django")}
    print(json.dumps({"singles_per_s": singles, "batched_per_s": batched, "versions": versions}))


if __name__ == "__main__":
    main()
