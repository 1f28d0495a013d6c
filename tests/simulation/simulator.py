"""A seeded, deterministic simulation of the whole of smsledger (TigerBeetle's simulator in
spirit): one `random.Random(seed)` decides everything the outside world does to the system over
a number of simulated days, and at the end every invariant of DESIGN.md is checked.

The world is real except for time. PostgreSQL holds the data; every request goes through the
Flask app (`app.test_client()`: routing, auth, validation, the error envelope, group commit);
charges and refunds run through the job functions a worker runs (`jobs.payments`), against the
Sippy simulator over real XML-RPC with digest auth; the clock is a `tests.conftest.Clock` that the
app, the jobs and the simulator share, moved hour by hour.

The workload, per simulated hour: the scheduled billing cycles through the cron endpoint (daily
02:00, weekly Monday 03:00, monthly 1st 04:00, threshold every hour) and a sweep of due charges;
then random operations: usage (single and batches, late events in closed periods, replays with
the same body and conflicting ones), pre-send checks, voids (of unbilled messages: reversed; of
billed ones: credited on the next invoice), admin actions on invoices (process, approve, retry,
cancel, refund; refusals are expected where the state forbids), cycles run a second time,
attempts to reverse billing-owned transfers through the generic ledger path, manual adjustments
and their reversals, settings changes, suspensions, late Sippy account assignments, top-ups,
reads, and Sippy faults aimed at one customer's account (faults, 401, 5xx, slow answers, resets,
timeouts after the debit or refund was applied, failing look-ups). Behaviours the tree may not
have yet (the refund action, credits for billed voids) are detected from the first answer (422,
409) and then held to. A few debits are planted in Sippy directly, with
references smsledger never issued: the known differences reconciliation must report. At the end
the faults are cleared, the due work is drained for two simulated days, and an accountant runs a
reconciliation over the whole range.

What it proves, for any seed (each check names its DESIGN invariant):
 1. the trial balance is balanced per currency (2);
 2. `ledger check` is clean: cached balances equal their transfers, debits equal credits (1, 2, 6);
 3. per customer, billing state and the ledger agree (`tests.scenarios.billing_disagreements`:
    usage - voided == billed + unbilled, receivable == unpaid invoices, counters) (7, 10);
 4. no usage transfer is billed twice, a voided one never, a billed one voided is credited
    exactly once; every close billed all the usage committed before it and sent before its
    period's end; the ledger holds exactly the usage the API answered, priced as the sample
    rate table says (5, 7);
 5. Sippy holds at most one debit per invoice, every successful charge has exactly one
    settlement and every debit of ours is a successful charge; at most one refund credit (8);
 6. every invoice's status agrees with its settlements: paid <=> one settlement standing (none
    for an invoice that rounded to zero), refunded <=> its settlement reversed by the refund (10);
 7. reconciliation reports exactly the planted differences, and matches every charge;
 8. after the drain no charge or refund is left open or due (liveness);
and, during the run: every API answer is one the contract allows (no 500, refusals only where
the state forbids, the pre-send decision follows the rules of SPEC §5 from public reads); no
billing cycle fails, even run twice; no job raises; and at every midnight checks 1-3 hold.

Reproducing: the same seed and size replay the same operations. Ids smsledger generates (uuid7)
differ between runs, so every choice is keyed by the simulation's own names and sorted data, and
every fault targets one customer's own Sippy account.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import random
import time
import uuid
import xmlrpc.client
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

import billing.tables as billing_tables
from billing.chart import receivable_code, unbilled_code
from billing.payments.sippy_client import SippyClient
from billing.tables import invoice_usage, invoices, payment_attempts
from infra.config import Config
from jobs import context
from jobs.payments import dispatch_charges
from ledger.checks import check_ledger
from ledger.db import unit_of_work
from ledger.money import format_micros, parse_micros
from ledger.tables import transfers
from sippy_simulator.server import SimulatorHandle
from tests.client import ApiClient, Caller
from tests.conftest import Clock
from tests.scenarios import SAMPLE_RATES, at, billing_disagreements, load_rates

MakeApi = Callable[[Config, Clock], ApiClient]
StartSim = Callable[..., SimulatorHandle]

CRON_SECRET = "simulation-cron-secret"
USER_TOKEN_SECRET = "simulation-user-token-secret-32b!"
SIPPY_LOGIN = ("smsledger", "secret")
RECORDS = "/api/admin/sms/billing"
SETTINGS = "/api/admin/sms/billing-settings"
MAX_REPORTED = 40  # violations kept for the report; the count says how many there were

#: Valid numbers to send to; each currency uses those the sample rate table prices in it.
CANDIDATE_DESTINATIONS = (
    "+447400123456",  # GB mobile, 4474
    "+447700123456",  # GB mobile, 447
    "+442071234567",  # GB landline, 44
    "+12025550123",  # US, 1
    "+14165550123",  # CA, 1416
    "+4915112345678",  # DE mobile, 4915
    "+4917012345678",  # DE mobile, 4917
    "+493012345678",  # DE landline, 49
    "+33612345678",  # FR mobile, 336
    "+33123456789",  # FR landline, 33
    "+919876543210",  # IN, 91
    "+8613812345678",  # CN, 86
)
SEGMENT_SIZES = {"gsm7": (160, 153), "ucs2": (70, 67)}  # SPEC §4: single part, per part


class SimulationFailed(AssertionError):
    """Raised with every violated invariant, the seed and the size."""


class ErrorLog(logging.Handler):
    """The app's error log during a run, kept instead of printed: a violation quotes the reason
    the app logged for it (a failed cycle logs only its count in the answer)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        reason = str(getattr(record, "reason", None) or record.getMessage())
        self.reasons.append(" ".join(line for line in reason.splitlines()[:2]))

    def since(self, mark: int) -> str:
        return "; ".join(self.reasons[mark:])[:400] or "nothing logged"


# -- configuration and the simulation's own model ---------------------------------------------


@dataclass(frozen=True)
class SimConfig:
    seed: int
    customers: int = 12
    days: int = 6
    start: datetime = datetime(2026, 11, 26, tzinfo=UTC)  # Thursday: crosses a Monday and the 1st
    ops_per_customer_day: float = 5.0
    planted_differences: int = 2
    sippy_timeout_s: float = 0.5
    drain_hours: int = 50  # past the longest retry backoff (24 h) after the last cycle

    @property
    def label(self) -> str:
        return f"seed={self.seed} customers={self.customers} days={self.days}"

    @property
    def command(self) -> str:
        return (
            f"python -m tests.simulation --seed {self.seed} --customers {self.customers}"
            f" --days {self.days}"
        )

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)


@dataclass
class Customer:
    id: str
    currency: str
    frequency: str
    sippy_account: int  # its own account in the simulator
    assigned: bool  # whether smsledger has been told the account
    created_by_usage: bool  # provisioned by its first SMS instead of POST /api/admin/customers
    activity: float  # how much it sends, relative to the others
    overrides: dict[str, Any]  # the settings overrides the simulation PUT, as on the wire
    status: str = "active"


@dataclass
class Message:
    id: str
    customer: str
    body: dict[str, Any]
    amount: int
    transfer_id: str
    void: str | None = None  # "voided" (reversed) or "credited" (billed: on the next invoice)


@dataclass
class Adjustment:
    key: str
    transfer_id: str
    customer: str | None  # None: between system accounts only
    reversed: bool = False


@dataclass(frozen=True)
class Planted:
    account: int
    amount: int  # micro-units
    currency: str
    reference: str


@dataclass(frozen=True)
class RateBook:
    """The sample rate table as the simulation reads it (its own reading, not smsledger's):
    open-ended rates of the default plan, by currency and prefix, in micro-units per segment."""

    prices: dict[tuple[str, str], int]

    @classmethod
    def sample(cls) -> RateBook:
        prices = {}
        with SAMPLE_RATES.open(newline="") as sheet:
            for row in csv.DictReader(sheet):
                if (row.get("plan") or "default") != "default":
                    continue
                if row.get("valid_from") or row.get("valid_to"):
                    continue  # windows are smsledger's to apply; the sample has none
                prices[(row["currency"], row["prefix"])] = parse_micros(row["price"])
        return cls(prices)

    def price(self, currency: str, destination: str) -> int | None:
        digits = destination.lstrip("+")
        for length in range(len(digits), 0, -1):
            found = self.prices.get((currency, digits[:length]))
            if found is not None:
                return found
        return None

    def destinations(self, currency: str) -> tuple[str, ...]:
        return tuple(d for d in CANDIDATE_DESTINATIONS if self.price(currency, d) is not None)


@dataclass
class World:
    """Everything the simulation touches and everything it remembers."""

    config: SimConfig
    api: ApiClient
    sim: SimulatorHandle
    clock: Clock
    rng: random.Random
    rates: RateBook
    customers: list[Customer]
    service: Caller
    admin: Caller
    accountant: Caller
    cron: Caller
    errors: ErrorLog
    messages: dict[str, Message] = field(default_factory=dict)
    message_ids: list[str] = field(default_factory=list)
    adjustments: list[Adjustment] = field(default_factory=list)
    planted: list[Planted] = field(default_factory=list)
    plant_at: set[datetime] = field(default_factory=set)
    stats: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    violation_keys: list[str] = field(default_factory=list)
    repeats: Counter[str] = field(default_factory=Counter)
    refund_supported: bool | None = None  # unknown until an admin first tries one
    credits_supported: bool | None = None  # unknown until a billed message is first voided
    reconciliation: dict[str, Any] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"

    def violate(self, invariant: str, message: str, key: str | None = None) -> None:
        """Record a broken invariant; repeats of one `key` are counted, reported once."""
        self.stats["violations"] += 1
        key = key or message
        self.repeats[key] += 1
        if self.repeats[key] == 1 and len(self.violations) < MAX_REPORTED:
            self.violations.append(f"[{invariant}] {iso(self.clock())}: {message}")
            self.violation_keys.append(key)

    def customer(self, customer_id: str) -> Customer:
        return next(c for c in self.customers if c.id == customer_id)

    def pick_customer(self) -> Customer:
        return self.rng.choices(self.customers, weights=[c.activity for c in self.customers])[0]

    def pick_message(self) -> Message | None:
        if not self.message_ids:
            return None
        recent = self.message_ids[-60:]
        pool = recent if self.rng.random() < 0.7 else self.message_ids
        return self.messages[self.rng.choice(pool)]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def answer(response: TestResponse) -> Any:
    return response.get_json(silent=True)


def error_code(response: TestResponse) -> str | None:
    body = answer(response)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code"))
    return None


def expect(
    w: World,
    response: TestResponse,
    allowed: Collection[int],
    what: str,
    code: str | None = None,
) -> bool:
    """Whether the answer is one the contract allows here; a violation otherwise."""
    if response.status_code in allowed and (code is None or error_code(response) == code):
        if response.status_code >= 400:
            w.stats[f"refusals.{response.status_code}"] += 1
        return True
    text = response.get_data(as_text=True)[:300]
    wanted = f"{sorted(allowed)}" + (f" {code}" if code else "")
    w.violate("api", f"{what}: answered {response.status_code} {text}; expected {wanted}")
    return False


def segments_of(event: dict[str, Any]) -> int:
    if "segments" in event:
        return int(event["segments"])
    single, per_part = SEGMENT_SIZES[event["encoding"]]
    length = int(event["text_length"])
    return 1 if length <= single else math.ceil(length / per_part)


# -- building the world -----------------------------------------------------------------------


FREQUENCIES = ("daily", "weekly", "monthly", "threshold")


def plan_customers(config: SimConfig, rng: random.Random) -> list[Customer]:
    """The customers, at random, except that any seed has every frequency (the first four),
    an EUR customer (the fifth), one whose Sippy account comes late (the sixth) and one
    provisioned by its first SMS (the seventh), when there are that many."""
    planned = []
    for n in range(config.customers):
        frequency = FREQUENCIES[n] if n < 4 else rng.choices(FREQUENCIES, (40, 20, 15, 25))[0]
        currency = "EUR" if n == 4 or (n > 6 and rng.random() < 0.2) else "USD"
        planned.append(
            Customer(
                id=f"sim-{n + 1:03d}",
                currency=currency,
                frequency=frequency,
                sippy_account=1001 + n,
                assigned=n != 5 and rng.random() < 0.9,
                created_by_usage=currency == "USD" and (n == 6 or rng.random() < 0.5),
                activity=rng.paretovariate(1.5),
                overrides=plan_overrides(rng, frequency),
            )
        )
    return planned


def plan_overrides(rng: random.Random, frequency: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {"frequency": frequency}
    if frequency == "threshold" and rng.random() < 0.5:
        overrides["threshold_amount"] = rng.choice(("0.20", "0.50", "1.00", "1.50"))
    elif frequency == "threshold":
        overrides["threshold_messages"] = rng.randint(8, 40)
    optional: tuple[tuple[float, str, Any], ...] = (
        (0.3, "credit_limit", rng.choice(("0.50", "1.00", "2.50", "5.00"))),
        (0.2, "require_manual_approval", True),
        (0.15, "auto_process", False),
        (0.1, "block_on_pending", True),
        (0.1, "max_pending_invoices", rng.randint(1, 3)),
        (0.3, "notifications_enabled", False),
    )
    for chance, name, value in optional:
        if rng.random() < chance:
            overrides[name] = value
    return overrides


def sippy_accounts(customers: list[Customer], rng: random.Random) -> list[dict[str, Any]]:
    """One account per customer; a few poor ones, so that real declines (402) happen too."""
    return [
        {
            "i_account": c.sippy_account,
            "username": f"sim{c.sippy_account}",
            "currency": c.currency,
            "balance": "1.00" if rng.random() < 0.15 else "1000.00",
            "credit_limit": "0",
        }
        for c in customers
    ]


def app_config(database_url: str, sim: SimulatorHandle, config: SimConfig) -> Config:
    return Config(
        database_url=database_url,
        cron_secret=CRON_SECRET,
        user_token_secret=USER_TOKEN_SECRET,
        sippy_url=sim.xmlapi_url,
        sippy_username=SIPPY_LOGIN[0],
        sippy_password=SIPPY_LOGIN[1],
        sippy_timeout_s=config.sippy_timeout_s,
    )


def configure_jobs(api: ApiClient, sim: SimulatorHandle, config: SimConfig) -> None:
    """The worker's context, as in the embedded mode: charges run inline, and an admin action or
    a cycle that makes a charge due kicks the dispatch at once."""
    state = api.runtime
    client = SippyClient(sim.xmlapi_url, *SIPPY_LOGIN, timeout_s=config.sippy_timeout_s)
    context.configure(
        context.from_config(state.config, sessions=state.sessions, clock=state.clock, client=client)
    )
    state.extras["dispatch_charges"] = dispatch_charges


def build_world(
    config: SimConfig, database_url: str, make_api: MakeApi, start_sim: StartSim
) -> World:
    rng = random.Random(config.seed)
    clock = Clock(config.start)
    customers = plan_customers(config, rng)
    sim = start_sim(accounts=sippy_accounts(customers, rng), clock=clock)
    api = make_api(app_config(database_url, sim, config), clock)
    configure_jobs(api, sim, config)
    world = World(
        config=config,
        api=api,
        sim=sim,
        clock=clock,
        rng=rng,
        rates=RateBook.sample(),
        customers=customers,
        service=api.as_role("service"),
        admin=api.as_role("admin"),
        accountant=api.as_role("accountant"),
        cron=api.as_cron(),
        errors=ErrorLog(),
    )
    hours = config.days * 24
    world.plant_at = {
        config.start + timedelta(hours=h)
        for h in rng.sample(range(6, hours), min(config.planted_differences, hours - 6))
    }
    return world


def set_up(w: World) -> None:
    load_rates(w.api.sessions, at(2026, 1, 1))
    for c in w.customers:
        if c.created_by_usage:
            post_events(w, [new_event(w, c, w.clock())], [])
            if c.assigned:
                patch_customer(w, c, {"sippy_account_id": str(c.sippy_account)})
        else:
            body: dict[str, Any] = {"user_id": c.id, "name": f"Customer {c.id}"}
            body["currency"] = c.currency
            if c.assigned:
                body["sippy_account_id"] = str(c.sippy_account)
            expect(w, w.admin.post("/api/admin/customers", body), {201}, f"create {c.id}")
        put_settings(w, c, c.overrides)


def patch_customer(w: World, c: Customer, changes: dict[str, Any]) -> None:
    response = w.admin.patch(f"/api/admin/customers/{c.id}", changes)
    expect(w, response, {200}, f"PATCH customer {c.id} {changes}")


def put_settings(w: World, c: Customer, changes: dict[str, Any]) -> None:
    response = w.admin.put(SETTINGS, {"userId": c.id, **changes})
    if expect(w, response, {200}, f"PUT settings of {c.id} {changes}"):
        c.overrides.update(changes)


# -- usage ------------------------------------------------------------------------------------


def new_event(w: World, c: Customer, sent_at: datetime | None) -> dict[str, Any]:
    rng = w.rng
    event: dict[str, Any] = {
        "message_id": w.new_id("m"),
        "user_id": c.id,
        "destination": rng.choice(w.rates.destinations(c.currency)),
    }
    if rng.random() < 0.6:
        event["segments"] = rng.choice((1, 1, 1, 2, 3))
    else:
        event["encoding"] = rng.choice(("gsm7", "ucs2"))
        event["text_length"] = rng.randint(1, 400)
    if rng.random() < 0.1:
        event["cost"] = format_micros(rng.randint(1, 500) * 100)
    if sent_at is not None:
        event["sent_at"] = iso(sent_at)
    return event


def expected_amount(w: World, event: dict[str, Any]) -> int | None:
    if "cost" in event:
        return parse_micros(event["cost"])
    currency = w.customer(event["user_id"]).currency
    price = w.rates.price(currency, event["destination"])
    return None if price is None else price * segments_of(event)


def post_events(w: World, new: list[dict[str, Any]], replays: list[Message]) -> None:
    """Post `new` events and replays of earlier ones (same body) and check every answer."""
    events = [*new, *(m.body for m in replays)]
    w.rng.shuffle(events)
    body: Any = events[0] if len(events) == 1 and w.rng.random() < 0.7 else {"events": events}
    response = w.service.post("/api/usage", body)
    if not expect(w, response, {201} if new else {200}, f"POST /api/usage ({len(events)})"):
        return
    results = {r["message_id"]: r for r in answer(response)["results"]}
    for event in new:
        record_posted(w, event, results.get(event["message_id"]))
    for message in replays:
        check_duplicate(w, message, results.get(message.id))
    w.stats["usage.requests"] += 1
    w.stats["usage.batches"] += "events" in body


def record_posted(w: World, event: dict[str, Any], result: dict[str, Any] | None) -> None:
    if result is None or result["status"] != "posted":
        w.violate("usage", f"{event['message_id']} not posted: {result}")
        return
    amount, wanted = parse_micros(result["amount"]), expected_amount(w, event)
    if amount != wanted:
        w.violate("rating", f"{event} priced {result['amount']}, the rate table says {wanted}")
    if result["currency"] != w.customer(event["user_id"]).currency:
        w.violate("rating", f"{event} posted in {result['currency']}")
    message = Message(
        event["message_id"], event["user_id"], event, amount, str(result["transfer_id"])
    )
    w.messages[message.id] = message
    w.message_ids.append(message.id)
    w.stats["usage.events_posted"] += 1


def check_duplicate(w: World, message: Message, result: dict[str, Any] | None) -> None:
    w.stats["usage.replays"] += 1
    if result is None or result["status"] != "duplicate":
        w.violate("idempotency", f"replay of {message.id} answered {result}")
    elif result["transfer_id"] != message.transfer_id:
        w.violate("idempotency", f"replay of {message.id} names another transfer: {result}")


def op_post_one(w: World) -> None:
    c = w.pick_customer()
    sent_at = w.clock() - timedelta(seconds=w.rng.randint(0, 300))
    post_events(w, [new_event(w, c, None if w.rng.random() < 0.05 else sent_at)], [])


def op_post_batch(w: World) -> None:
    now = w.clock()
    events = [
        new_event(w, w.pick_customer(), now - timedelta(seconds=w.rng.randint(0, 3600)))
        for _ in range(w.rng.randint(2, 25))
    ]
    replays = []
    if w.message_ids and w.rng.random() < 0.4:
        chosen = w.rng.sample(w.message_ids, min(2, len(w.message_ids)))
        replays = [w.messages[m] for m in chosen]
    post_events(w, events, replays)


def op_post_late(w: World) -> None:
    """An SMS reported a day or two late: its period has been closed already."""
    earliest = w.config.start + timedelta(minutes=1)
    sent_at = max(earliest, w.clock() - timedelta(hours=w.rng.uniform(26, 50)))
    post_events(w, [new_event(w, w.pick_customer(), sent_at)], [])
    w.stats["usage.late"] += 1


def op_replay(w: World) -> None:
    message = w.pick_message()
    if message is not None:
        post_events(w, [], [message])


def op_conflicting_replay(w: World) -> None:
    message = w.pick_message()
    if message is None:
        return
    changed = dict(message.body)
    if "segments" in changed:
        changed["segments"] = int(changed["segments"]) % 3 + 1
    else:
        changed["text_length"] = int(changed["text_length"]) + 500
    response = w.service.post("/api/usage", changed)
    expect(w, response, {409}, f"conflicting replay of {message.id}", "idempotency_conflict")
    w.stats["usage.conflicts"] += 1


# -- the pre-send check -----------------------------------------------------------------------


def balance_of(w: World, code: str) -> int:
    response = w.accountant.get(f"/api/ledger/accounts/{code}")
    if response.status_code == 404:
        return 0
    expect(w, response, {200}, f"GET account {code}")
    return parse_micros(answer(response)["balance"]) if response.status_code == 200 else 0


def invoice_count(w: World, customer_id: str, status: str) -> int:
    response = w.admin.get(RECORDS, query_string={"userId": customer_id, "status": status})
    expect(w, response, {200}, f"GET records of {customer_id} {status}")
    return int(answer(response)["total"]) if response.status_code == 200 else 0


def effective(c: Customer, name: str) -> Any:
    """The customer's effective setting: its override, else the global default (never changed
    by the simulation, so the defaults of SPEC §5)."""
    defaults = {"require_manual_approval": False, "block_on_pending": False}
    return c.overrides.get(name, defaults.get(name))


def block_reasons(w: World, c: Customer, cost: int) -> tuple[set[str], int, int]:
    """Which rules of SPEC §5/§6 forbid this send, from public reads: (reasons, unbilled,
    unpaid invoices)."""
    unbilled = balance_of(w, unbilled_code(c.id))
    receivable = balance_of(w, receivable_code(c.id))
    pending = invoice_count(w, c.id, "pending")
    unpaid = pending + invoice_count(w, c.id, "processing") + invoice_count(w, c.id, "failed")
    reasons = set()
    if c.status == "suspended":
        reasons.add("customer_suspended")
    if effective(c, "require_manual_approval") and pending:
        reasons.add("pending_billings_require_approval")
    if effective(c, "block_on_pending") and unpaid:
        reasons.add("max_pending_invoices")
    most = effective(c, "max_pending_invoices")
    if most is not None and unpaid and unpaid >= most:
        reasons.add("max_pending_invoices")
    limit = effective(c, "credit_limit")
    if limit is not None and unbilled + max(receivable, 0) + cost > parse_micros(limit):
        reasons.add("credit_limit_exceeded")
    return reasons, unbilled, unpaid


def op_presend(w: World) -> None:
    c = w.pick_customer()
    cost = w.rng.randint(1, 200) * 1000
    body: dict[str, Any] = {
        "user_id": c.id,
        "message_count": w.rng.randint(1, 30),
        "total_cost": format_micros(cost),
    }
    if w.rng.random() < 0.3:
        body["destination"] = w.rng.choice(w.rates.destinations(c.currency))
    response = w.service.post("/api/usage/check", body)
    if not expect(w, response, {200}, f"pre-send check {body}"):
        return
    decision = answer(response)
    reasons, unbilled, unpaid = block_reasons(w, c, cost)
    w.stats[f"presend.{decision['reason'] or 'allowed'}"] += 1
    if decision["allowed"] == bool(reasons) or (reasons and decision["reason"] not in reasons):
        w.violate("presend", f"{c.id} {body}: answered {decision}, the rules say {reasons}")
    if parse_micros(decision["unbilled"]) != unbilled or decision["pending_billings"] != unpaid:
        w.violate("presend", f"{c.id}: {decision} but unbilled {unbilled}, unpaid {unpaid}")


# -- voids ------------------------------------------------------------------------------------


def is_billed(w: World, transfer_id: str) -> bool:
    with unit_of_work(w.api.sessions) as session:
        return (
            session.execute(
                sa.select(invoice_usage.c.invoice_id).where(
                    invoice_usage.c.transfer_id == uuid.UUID(transfer_id)
                )
            ).first()
            is not None
        )


def void_answers(w: World, message: Message, billed: bool) -> set[int]:
    """What a void may answer: a replay 200; unbilled 201 (reversed); billed 201 (credited on
    the next invoice, SPEC §7) or 409 where the tree predates credits; the first answer decides
    which, and every later one must agree."""
    if message.void is not None:
        return {200}
    if not billed:
        return {201}
    return {201, 409} if w.credits_supported is None else {201 if w.credits_supported else 409}


def op_void(w: World) -> None:
    message = w.pick_message()
    if message is None or w.rng.random() < 0.1:
        ghost = w.new_id("never-sent")
        response = w.service.post(f"/api/usage/{ghost}/void", {})
        expect(w, response, {404}, f"void of unknown {ghost}", "usage_not_found")
        w.stats["voids.404 unknown"] += 1
        return
    billed = is_billed(w, message.transfer_id)
    wanted = void_answers(w, message, billed)
    caller = w.service if w.rng.random() < 0.7 else w.admin
    response = caller.post(f"/api/usage/{message.id}/void", {"reason": "send failed"})
    code = "billing_owned_transfer" if wanted == {409} else None
    if not expect(w, response, wanted, f"void of {message.id} (billed={billed})", code):
        return
    status = answer(response)["status"] if response.status_code < 300 else "refused"
    if billed and message.void is None:
        w.credits_supported = response.status_code == 201
    if response.status_code == 201:
        wanted_status = "credited" if billed else "voided"
        if status != wanted_status:
            w.violate("void", f"void of {message.id} (billed={billed}) answered {status}")
        message.void = wanted_status
    w.stats[f"voids.{status}{' (billed)' if billed else ''}"] += 1


# -- invoices and their admin actions ---------------------------------------------------------


def invoices_of(w: World, customer_id: str) -> list[dict[str, Any]]:
    response = w.admin.get(RECORDS, query_string={"userId": customer_id, "per_page": 100})
    if not expect(w, response, {200}, f"GET records of {customer_id}"):
        return []
    items: list[dict[str, Any]] = answer(response)["items"]
    return sorted(items, key=lambda i: (i["created_at"], i["period_start"], i["period_end"]))


def pick_invoice(w: World) -> dict[str, Any] | None:
    """One invoice's detail, of a random customer that has any."""
    for _ in range(4):
        items = invoices_of(w, w.pick_customer().id)
        if items:
            chosen = w.rng.choice(items)
            response = w.admin.get(f"{RECORDS}/{chosen['id']}")
            if expect(w, response, {200}, f"GET record {chosen['id']}"):
                detail: dict[str, Any] = answer(response)
                return detail
            return None
    return None


ACTION_FROM = {
    "process": ("pending",),
    "approve": ("pending",),
    "retry": ("failed",),
    "cancel": ("pending", "failed"),
    "refund": ("paid",),
}
"""The admin actions of SPEC §6 and README, and the states each may start from."""
STATUS_AFTER = {
    "process": "pending",
    "approve": "pending",
    "retry": "pending",
    "cancel": "cancelled",
    "refund": "paid",
}
"""The status an accepted action answers (a charge or refund it queues happens after)."""


def allowed(action: str, invoice: dict[str, Any]) -> bool:
    if action == "approve" and invoice["approved_at"] is not None:
        return False
    return invoice["status"] in ACTION_FROM[action]


ACTION_WEIGHTS = {"process": 3, "approve": 2, "retry": 3, "cancel": 1, "refund": 1}


def choose_action(w: World, invoice: dict[str, Any]) -> str:
    """Mostly an action the invoice's state allows, sometimes any (to be refused)."""
    valid = [a for a in ACTION_WEIGHTS if allowed(a, invoice)]
    if w.refund_supported is False and "refund" in valid:
        valid.remove("refund")
    pool = valid if valid and w.rng.random() < 0.6 else list(ACTION_WEIGHTS)
    return w.rng.choices(pool, weights=[ACTION_WEIGHTS[a] for a in pool])[0]


def op_admin_action(w: World) -> None:
    invoice = pick_invoice(w)
    if invoice is None:
        return
    action = choose_action(w, invoice)
    if action == "refund" and w.refund_supported is False:
        return
    response = w.admin.post(RECORDS, {"billingId": invoice["id"], "action": action})
    if action == "refund" and w.refund_supported is None:
        w.refund_supported = response.status_code != 422
        if not w.refund_supported:
            w.stats["admin.refund.unsupported (422)"] += 1
            return
    wanted = 200 if allowed(action, invoice) else 409
    what = f"{action} of a {invoice['status']} invoice {invoice['id']}"
    if expect(w, response, {wanted}, what, None if wanted == 200 else "invalid_state"):
        w.stats[f"admin.{action}.{'done' if wanted == 200 else 'refused'}"] += 1
    if wanted == 200 and response.status_code == 200:
        if answer(response)["status"] != STATUS_AFTER[action]:
            w.violate("admin", f"{what} answered {answer(response)}")


def op_reverse_billing_transfer(w: World) -> None:
    """The generic reversal must refuse every transfer billing owns and name its owner."""
    transfer_id: str | None = None
    if w.rng.random() < 0.5:
        message = w.pick_message()
        transfer_id = message.transfer_id if message else None
    else:
        invoice = pick_invoice(w)
        owned = sorted(invoice["transfers"], key=lambda t: t["kind"]) if invoice else []
        transfer_id = w.rng.choice(owned)["id"] if owned else None
    if transfer_id is None:
        return
    response = w.admin.post(
        f"/api/ledger/transfers/{transfer_id}/reverse", {"idempotency_key": w.new_id("rev")}
    )
    expect(w, response, {409}, f"generic reversal of {transfer_id}", "billing_owned_transfer")
    w.stats["reversals.refused"] += 1


# -- manual entries ---------------------------------------------------------------------------


def op_adjustment(w: World) -> None:
    """A goodwill credit on a customer's receivable (reversed before the end, see `drain`), or
    an entry between system accounts (kept)."""
    c = w.pick_customer()
    key = w.new_id("adj")
    on_customer = w.rng.random() < 0.7
    credit = receivable_code(c.id) if on_customer else f"opening-balance:{c.currency}"
    leg = {
        "debit_account": f"adjustments:{c.currency}",
        "credit_account": credit,
        "amount": format_micros(w.rng.randint(1, 200) * 10_000),
    }
    body = {"idempotency_key": key, "kind": "adjustment", "transfers": [leg]}
    response = w.admin.post("/api/ledger/transfers", {**body, "description": "goodwill"})
    if not expect(w, response, {201}, f"adjustment {body}"):
        return
    transfer_id = answer(response)["transfers"][0]["id"]
    w.adjustments.append(Adjustment(key, transfer_id, c.id if on_customer else None))
    w.stats["adjustments.posted"] += 1
    if w.rng.random() < 0.3:
        replay = w.admin.post("/api/ledger/transfers", {**body, "description": "goodwill"})
        if expect(w, replay, {200}, f"replay of adjustment {key}"):
            if answer(replay)["transfers"][0]["id"] != transfer_id:
                w.violate("idempotency", f"replay of adjustment {key} posted another transfer")


def reverse_adjustment(w: World, adjustment: Adjustment) -> None:
    path = f"/api/ledger/transfers/{adjustment.transfer_id}/reverse"
    key = f"undo-{adjustment.key}"
    if expect(w, w.admin.post(path, {"idempotency_key": key}), {201}, f"reverse {adjustment}"):
        adjustment.reversed = True
        w.stats["adjustments.reversed"] += 1
    if w.rng.random() < 0.3:
        expect(w, w.admin.post(path, {"idempotency_key": key}), {200}, f"replay {key}")
    if w.rng.random() < 0.3:
        again = w.admin.post(path, {"idempotency_key": w.new_id("undo")})
        expect(w, again, {409}, f"second reversal of {adjustment}", "already_reversed")


def op_reverse_adjustment(w: World) -> None:
    standing = [a for a in w.adjustments if not a.reversed and a.customer is not None]
    if standing:
        reverse_adjustment(w, w.rng.choice(standing))


# -- settings, customers, Sippy ---------------------------------------------------------------


def op_change_settings(w: World) -> None:
    c = w.pick_customer()
    rng = w.rng
    choices: list[dict[str, Any]] = [
        {"credit_limit": rng.choice((None, "0.50", "2.00", "10.00"))},
        {"require_manual_approval": rng.random() < 0.3},
        {"auto_process": rng.random() < 0.8},
        {"block_on_pending": rng.random() < 0.2},
        {"max_pending_invoices": rng.choice((None, 1, 2, 4))},
    ]
    put_settings(w, c, rng.choice(choices))
    w.stats["settings.changed"] += 1


def op_suspend_or_reactivate(w: World) -> None:
    c = w.pick_customer()
    c.status = "active" if c.status == "suspended" else "suspended"
    patch_customer(w, c, {"status": c.status})
    w.stats[f"customers.{c.status}"] += 1


def op_assign_sippy_account(w: World) -> None:
    waiting = [c for c in w.customers if not c.assigned]
    if waiting:
        c = w.rng.choice(waiting)
        patch_customer(w, c, {"sippy_account_id": str(c.sippy_account)})
        c.assigned = True
        w.stats["customers.sippy_account_assigned"] += 1


def op_add_funds(w: World) -> None:
    c = w.pick_customer()
    w.sim.state.call(
        "accountAddFunds",
        {
            "i_account": c.sippy_account,
            "amount": float(w.rng.choice((2, 5, 20))),
            "currency": c.currency,
            "payment_notes": "top-up by the customer",
        },
    )
    w.stats["sippy.top_ups"] += 1


#: (label, weight, rule): the faults aimed at one customer's Sippy account.
FAULTS: tuple[tuple[str, float, dict[str, Any]], ...] = (
    ("fault 500 (retryable)", 3, {"kind": "fault", "fault_code": 500}),
    ("fault 402 (terminal)", 1, {"kind": "fault", "fault_code": 402}),
    ("fault 423 (terminal)", 0.5, {"kind": "fault", "fault_code": 423}),
    ("http_401", 0.5, {"kind": "http_401"}),
    ("http_5xx", 2, {"kind": "http_5xx", "fault_code": 503}),
    ("slow", 1, {"kind": "slow", "delay_s": 0.02}),
    ("reset", 2, {"kind": "reset"}),
    ("timeout_after_apply", 2, {"kind": "timeout_after_apply"}),
    ("lookup http_5xx", 1, {"kind": "http_5xx", "method": "getPaymentsList"}),
    ("lookup reset", 0.5, {"kind": "reset", "method": "getPaymentsList"}),
    ("refund reset", 0.5, {"kind": "reset", "method": "accountCredit"}),
    ("refund timeout_after_apply", 0.5, {"kind": "timeout_after_apply", "method": "accountCredit"}),
)


def op_inject_fault(w: World) -> None:
    c = w.rng.choice([c for c in w.customers if c.assigned] or w.customers)
    label, _, rule = w.rng.choices(FAULTS, weights=[f[1] for f in FAULTS])[0]
    rule = {"method": "accountDebit", **rule, "i_account": c.sippy_account}
    if rule["kind"] == "timeout_after_apply":
        rule["delay_s"] = w.config.sippy_timeout_s + 0.3
    w.sim.state.inject_fault(**rule)
    w.stats[f"faults.injected.{label}"] += 1
    w.stats["faults.injected"] += 1


def plant_difference(w: World) -> None:
    """A debit made in Sippy by someone else, with a reference smsledger never issued: the one
    kind of difference reconciliation must report."""
    c = w.rng.choice([c for c in w.customers if c.assigned] or w.customers)
    if not c.assigned:
        return
    amount = w.rng.randint(1, 300) * 10_000
    n = len(w.planted) + 1
    reference = (
        f"manual correction {n}"
        if n % 2
        else f"smsledger:{uuid.UUID(int=w.rng.getrandbits(128))}:{uuid.UUID(int=n)}"
    )
    params = {
        "i_account": c.sippy_account,
        "amount": float(Decimal(amount) / 1_000_000),
        "currency": c.currency,
        "payment_notes": reference,
    }
    try:
        w.sim.state.call("accountDebit", params)
    except xmlrpc.client.Fault:  # a poor account: top it up first, as its owner would
        top_up = {**params, "amount": 10.0, "payment_notes": "top-up by the customer"}
        w.sim.state.call("accountAddFunds", top_up)
        w.sim.state.call("accountDebit", params)
    w.planted.append(Planted(c.sippy_account, amount, c.currency, reference))
    w.stats["sippy.planted_debits"] += 1


def op_reads(w: World) -> None:
    """The read side must answer, whatever state the writes left."""
    c = w.pick_customer()
    user = w.api.as_user(c.id)
    reads: list[tuple[Caller, str]] = [
        (w.admin, "/api/admin/sms/billing-stats"),
        (user, "/api/user/billing-summary"),
        (user, "/api/user/billing-history"),
        (user, "/api/user/notifications"),
        (w.accountant, f"/api/ledger/accounts?customer_id={c.id}"),
        (w.accountant, f"/api/ledger/accounts/{receivable_code(c.id)}/transfers"),
        (w.admin, f"/api/admin/customers/{c.id}"),
        (w.admin, f"{SETTINGS}?userId={c.id}&includeGlobal=true"),
        (w.admin, f"{RECORDS}?status=failed"),
    ]
    caller, path = w.rng.choice(reads)
    expect(w, caller.get(path), {200}, f"GET {path}")
    w.stats["reads"] += 1


def op_rerun_cycle(w: World) -> None:
    """A scheduled cycle run again later the same day (a retried job, an admin's `bill`):
    closing is idempotent (SPEC §6), so it must not fail."""
    run_cycle(w, w.rng.choice(("daily", "daily", "weekly", "monthly")))
    w.stats["cycles.rerun"] += 1


#: (operation, weight): what the outside world does, how often.
OPERATIONS: tuple[tuple[Callable[[World], None], float], ...] = (
    (op_post_one, 30),
    (op_post_batch, 8),
    (op_post_late, 4),
    (op_replay, 5),
    (op_conflicting_replay, 2),
    (op_presend, 8),
    (op_void, 5),
    (op_admin_action, 6),
    (op_reverse_billing_transfer, 2),
    (op_adjustment, 1.5),
    (op_reverse_adjustment, 1.5),
    (op_inject_fault, 6),
    (op_change_settings, 1.5),
    (op_suspend_or_reactivate, 1),
    (op_assign_sippy_account, 1),
    (op_add_funds, 1),
    (op_reads, 2),
    (op_rerun_cycle, 1),
)
OPERATION_FUNCTIONS = [operation for operation, _ in OPERATIONS]
OPERATION_WEIGHTS = [weight for _, weight in OPERATIONS]


# -- time: cycles, sweeps, hours, days --------------------------------------------------------


def run_cycle(w: World, frequency: str) -> None:
    mark = len(w.errors.reasons)
    response = w.cron.post("/api/cron/process-sms-billing", query_string={"type": frequency})
    if not expect(w, response, {200}, f"cron {frequency}"):
        return
    summary = answer(response)
    w.stats[f"invoices.created.{frequency}"] += summary["invoices_created"]
    if summary["errors"]:
        what = f"the {frequency} cycle failed ({summary}); the app logged: {w.errors.since(mark)}"
        w.violate("cycle", what, key=f"cycle {frequency}")


def sweep(w: World) -> None:
    """The scheduler's every-minute dispatch of due charges and refunds."""
    try:
        dispatched = dispatch_charges()["dispatched"]
    except Exception as error:  # a job that raises is a bug: the worker would log and retry
        w.violate("jobs", f"dispatch_charges raised {type(error).__name__}: {error}")
        return
    w.stats["sweeps.dispatched"] += dispatched


def scheduled(w: World, hour: datetime) -> None:
    if hour.hour == 2:
        run_cycle(w, "daily")
    if hour.weekday() == 0 and hour.hour == 3:
        run_cycle(w, "weekly")
    if hour.day == 1 and hour.hour == 4:
        run_cycle(w, "monthly")
    run_cycle(w, "threshold")
    sweep(w)


def operations_in(w: World, hour: datetime) -> int:
    """How many operations this hour: more by day than by night, on average the configured
    number per customer and day."""
    share = 2.0 if 8 <= hour.hour < 20 else 0.5  # 12 h x 2 + 12 h x 0.5 = 30 shares a day
    rate = w.config.customers * w.config.ops_per_customer_day * share / 30
    whole = int(rate)
    return whole + (1 if w.rng.random() < rate - whole else 0)


def run_hour(w: World, hour: datetime) -> None:
    w.clock.now = hour
    scheduled(w, hour)
    if hour in w.plant_at:
        plant_difference(w)
    offsets = sorted(w.rng.uniform(1, 3599) for _ in range(operations_in(w, hour)))
    for offset in offsets:
        w.clock.now = hour + timedelta(seconds=offset)
        w.rng.choices(OPERATION_FUNCTIONS, weights=OPERATION_WEIGHTS)[0](w)
        w.stats["operations"] += 1


def drain(w: World) -> None:
    """The outside world goes quiet: faults stop, goodwill credits are reversed, and the
    scheduler runs on for two simulated days so every due charge, retry and look-up happens."""
    w.stats["faults.left_unconsumed"] += len(w.sim.state.faults())
    w.sim.state.clear_faults()
    for adjustment in w.adjustments:
        if not adjustment.reversed and adjustment.customer is not None:
            reverse_adjustment(w, adjustment)
    for h in range(w.config.drain_hours):
        hour = w.config.end + timedelta(hours=h)
        w.clock.now = hour
        scheduled(w, hour)


def daily_checks(w: World, day: int) -> None:
    """Cheap invariants at every midnight, so a failure names the day it first appeared."""
    check_trial_balance(w, f"day {day}")
    with unit_of_work(w.api.sessions) as session:
        for problem in check_ledger(session):
            w.violate("2 ledger check", f"day {day}: {problem}")
        credited = {a.customer for a in w.adjustments if not a.reversed}
        for c in w.customers:
            if c.id not in credited:  # a standing goodwill credit moves the receivable by design
                for disagreement in billing_disagreements(session, c.id):
                    w.violate("3 billing agrees", f"day {day}, {c.id}: {disagreement}")


# -- the end checks ---------------------------------------------------------------------------


def check_trial_balance(w: World, when: str) -> None:
    response = w.accountant.get("/api/ledger/trial-balance")
    if not expect(w, response, {200}, "GET trial balance"):
        return
    for currency, totals in answer(response)["currencies"].items():
        if not totals["balanced"] or totals["debits"] != totals["credits"]:
            w.violate("1 trial balance", f"{when}: {currency} {totals}")


def check_ledger_clean(w: World, session: Session) -> None:
    for problem in check_ledger(session):
        w.violate("2 ledger check", str(problem))


def check_billing_agrees(w: World, session: Session) -> None:
    for c in w.customers:
        for problem in billing_disagreements(session, c.id):
            w.violate("3 billing agrees", f"{c.id}: {problem}")


USAGE = transfers.alias("usage")
UNDO = transfers.alias("undo")
NOT_VOIDED = ~sa.exists().where(UNDO.c.reverses_id == USAGE.c.id)
BILLED = sa.exists().where(invoice_usage.c.transfer_id == USAGE.c.id)


def check_usage_billed_once(w: World, session: Session) -> None:
    twice = session.execute(
        sa.select(invoice_usage.c.transfer_id)
        .group_by(invoice_usage.c.transfer_id)
        .having(sa.func.count() > 1)
    ).all()
    for row in twice:
        w.violate("4 billed once", f"usage transfer {row.transfer_id} is on several invoices")
    voided_and_billed = session.execute(
        sa.select(USAGE.c.idempotency_key).where(USAGE.c.kind == "usage", ~NOT_VOIDED, BILLED)
    ).all()
    for row in voided_and_billed:
        w.violate("4 billed once", f"message {row.idempotency_key} was voided and billed")


def check_closes_complete(w: World, session: Session) -> None:
    """Every close billed all the customer's usage committed before it and sent before its
    period's end (in that invoice or an earlier one), unless voided: none is lost."""
    latest: dict[str, Any] = {}
    for row in session.execute(sa.select(invoices).order_by(invoices.c.created_at)):
        latest[row.customer_id] = row
    for customer_id, invoice in sorted(latest.items()):
        missed = session.execute(
            sa.select(USAGE.c.idempotency_key).where(
                USAGE.c.kind == "usage",
                USAGE.c.metadata["user_id"].as_string() == customer_id,
                USAGE.c.effective_at < invoice.period_end,
                USAGE.c.posted_at < invoice.created_at,
                NOT_VOIDED,
                ~BILLED,
            )
        ).all()
        if missed:
            names = ", ".join(r.idempotency_key for r in missed[:5])
            w.violate(
                "4 close complete",
                f"{customer_id}: {len(missed)} message(s) sent before {invoice.period_end} and"
                f" posted before the close at {invoice.created_at} are unbilled: {names}",
            )


def check_usage_as_answered(w: World, session: Session) -> None:
    """The ledger holds exactly the usage the API said it posted, and the voids it accepted."""
    posted = session.execute(
        sa.select(
            USAGE.c.metadata["user_id"].as_string().label("user_id"),
            sa.func.count().label("messages"),
            sa.func.sum(USAGE.c.amount).label("amount"),
            sa.func.count().filter(~NOT_VOIDED).label("voided"),
        )
        .where(USAGE.c.kind == "usage")
        .group_by(USAGE.c.metadata["user_id"].as_string())
    ).all()
    ledger = {r.user_id: (r.messages, int(r.amount), r.voided) for r in posted}
    told: dict[str, tuple[int, int, int]] = {}
    for m in w.messages.values():
        n, amount, voided = told.get(m.customer, (0, 0, 0))
        told[m.customer] = (n + 1, amount + m.amount, voided + (m.void == "voided"))
    if ledger != told:
        keys = sorted(set(ledger) | set(told))
        diff = {k: (ledger.get(k), told.get(k)) for k in keys if ledger.get(k) != told.get(k)}
        w.violate("4 usage as answered", f"(ledger, answered) per customer: {diff}")


def check_charges_once(w: World, session: Session) -> None:
    """At most one Sippy debit per invoice; successful charges, settlements and our Sippy debits
    correspond one to one, with the same amounts."""
    planted = {p.reference for p in w.planted}
    ours = [
        p
        for p in w.sim.state.payments()
        if p["type"] == "debit"
        and str(p["notes"]).startswith("smsledger:")
        and p["notes"] not in planted
    ]
    per_invoice = Counter(str(p["notes"]).split(":")[1] for p in ours)
    for invoice_id, n in sorted(per_invoice.items()):
        if n > 1:
            w.violate("5 charged once", f"invoice {invoice_id} has {n} debits in Sippy")
    sippy = {str(p["notes"]): parse_micros(str(p["amount"])) for p in ours}
    accepted = dict(
        session.execute(
            sa.select(payment_attempts.c.reference, payment_attempts.c.amount_micros).where(
                payment_attempts.c.status == "accepted"
            )
        ).all()
    )
    settled: dict[str, list[int]] = defaultdict(list)
    for row in session.execute(
        sa.select(transfers.c.metadata, transfers.c.amount).where(transfers.c.kind == "settlement")
    ):
        settled[str((row.metadata or {}).get("reference"))].append(int(row.amount))
    compare_charges(w, sippy, accepted, settled)


def compare_charges(
    w: World, sippy: dict[str, int], accepted: dict[str, int], settled: dict[str, list[int]]
) -> None:
    for reference in sorted(set(sippy) | set(accepted) | set(settled)):
        amounts = (sippy.get(reference), accepted.get(reference), settled.get(reference))
        in_sippy, attempt, settlements = amounts
        if attempt is None or in_sippy != attempt or settlements != [attempt]:
            w.violate(
                "5 charged once",
                f"{reference}: Sippy debit {in_sippy}, accepted attempt {attempt},"
                f" settlements {settlements}",
            )


def check_credits_once(w: World, session: Session) -> None:
    """Every billed message voided is credited exactly once, and nothing else is."""
    usage_credits = getattr(billing_tables, "usage_credits", None)
    if usage_credits is None:
        return
    rows = session.execute(sa.select(usage_credits.c.message_id)).scalars().all()
    told = sorted(m.id for m in w.messages.values() if m.void == "credited")
    if sorted(rows) != told:
        w.violate("4 credited once", f"credits recorded {sorted(rows)}, voids answered {told}")


def check_refunds_once(w: World, session: Session) -> None:
    """At most one Sippy credit per refunded invoice, one for every accepted refund attempt."""
    refund_attempts = getattr(billing_tables, "refund_attempts", None)
    if refund_attempts is None:
        return
    credits = Counter(
        str(p["notes"])
        for p in w.sim.state.payments()
        if p["type"] == "credit" and str(p["notes"]).startswith("smsledger-refund:")
    )
    per_invoice = Counter(reference.split(":")[1] for reference in credits.elements())
    for invoice_id, n in sorted(per_invoice.items()):
        if n > 1:
            w.violate("5 refunded once", f"invoice {invoice_id} has {n} credits in Sippy")
    accepted = set(
        session.execute(
            sa.select(refund_attempts.c.reference).where(refund_attempts.c.status == "accepted")
        ).scalars()
    )
    if accepted != set(credits):
        w.violate("5 refunded once", f"accepted refunds {accepted} != Sippy credits {credits}")


def settlement_states(session: Session) -> tuple[Counter[str], Counter[str]]:
    """Per invoice id: settlements still standing, and settlements reversed by a refund."""
    undo = transfers.alias("undo")
    rows = session.execute(
        sa.select(transfers.c.metadata, undo.c.idempotency_key)
        .outerjoin(undo, undo.c.reverses_id == transfers.c.id)
        .where(transfers.c.kind == "settlement")
    ).all()
    standing: Counter[str] = Counter()
    refunded: Counter[str] = Counter()
    for row in rows:
        invoice_id = str((row.metadata or {}).get("invoice_id"))
        if row.idempotency_key is None:
            standing[invoice_id] += 1
        elif str(row.idempotency_key).startswith("refund:"):
            refunded[invoice_id] += 1
    return standing, refunded


def check_invoice_states(w: World, session: Session) -> None:
    standing, refunded = settlement_states(session)
    for row in session.execute(
        sa.select(invoices.c.id, invoices.c.status, invoices.c.amount_micros)
    ):
        w.stats[f"invoices.final.{row.status}"] += 1
        key = str(row.id)
        wanted_standing = 1 if row.status == "paid" and row.amount_micros > 0 else 0
        wanted_refunded = 1 if row.status == "refunded" else 0
        if (standing[key], refunded[key]) != (wanted_standing, wanted_refunded):
            w.violate(
                "6 status agrees",
                f"invoice {key} is {row.status} (amount {row.amount_micros}) with"
                f" {standing[key]} standing and {refunded[key]} refunded settlement(s)",
            )


def check_nothing_left_open(w: World, session: Session) -> None:
    now = w.clock()
    stuck = session.execute(
        sa.select(invoices.c.id, invoices.c.status, invoices.c.next_retry_at).where(
            sa.or_(
                invoices.c.status == "processing",
                sa.and_(
                    invoices.c.status.in_(("pending", "failed")), invoices.c.next_retry_at <= now
                ),
            )
        )
    ).all()
    for row in stuck:
        w.violate("8 liveness", f"after the drain invoice {row.id} is {row.status}, due {row}")
    open_attempts = session.execute(
        sa.select(sa.func.count()).where(payment_attempts.c.status.in_(("started", "unknown")))
    ).scalar_one()
    if open_attempts:
        w.violate("8 liveness", f"{open_attempts} charge attempt(s) still open after the drain")
    refund_attempts = getattr(billing_tables, "refund_attempts", None)
    if refund_attempts is not None:
        waiting = session.execute(
            sa.select(sa.func.count()).where(
                refund_attempts.c.status.in_(("requested", "started", "unknown"))
            )
        ).scalar_one()
        if waiting:
            w.violate("8 liveness", f"{waiting} refund attempt(s) still open after the drain")


def count_outcomes(w: World, session: Session) -> None:
    for status, n in session.execute(
        sa.select(payment_attempts.c.status, sa.func.count()).group_by(payment_attempts.c.status)
    ):
        w.stats[f"charges.{status}"] += n
        w.stats["charges"] += n
    for code, n in session.execute(
        sa.select(payment_attempts.c.code, sa.func.count())
        .where(payment_attempts.c.code.is_not(None))
        .group_by(payment_attempts.c.code)
    ):
        w.stats[f"charges.code.{code}"] += n


def run_reconciliation(w: World) -> None:
    body = {
        "from": iso(w.config.start - timedelta(days=1)),
        "to": iso(w.clock() + timedelta(days=1)),
        "source": "sippy",
    }
    response = w.accountant.post("/api/reconciliation/runs", body)
    if not expect(w, response, {201}, f"reconciliation {body}"):
        return
    run = answer(response)
    w.reconciliation = {"status": run["status"], "totals": run["totals"]}
    differences = [i for i in run["items"] if i["kind"] != "matched"]
    found = sorted(
        (
            i["kind"],
            i["sippy_account_id"],
            i["reference"],
            parse_micros((i["sippy"] or {})["amount"]),
        )
        for i in differences
        if i["kind"] == "missing_in_ledger"
    )
    wanted = sorted(("missing_in_ledger", str(p.account), p.reference, p.amount) for p in w.planted)
    others = [i for i in differences if i["kind"] != "missing_in_ledger"]
    if found != wanted or others:
        w.violate("7 reconciliation", f"differences {found + others}, planted {wanted}")
    if run["status"] != ("differences" if w.planted else "reconciled"):
        w.violate("7 reconciliation", f"status {run['status']} with {len(w.planted)} planted")
    matched = sum(1 for i in run["items"] if i["kind"] == "matched")
    if matched != w.stats["charges.accepted"]:
        w.violate("7 reconciliation", f"{matched} matched, {w.stats['charges.accepted']} charges")


def final_checks(w: World) -> None:
    check_trial_balance(w, "at the end")
    with unit_of_work(w.api.sessions) as session:
        count_outcomes(w, session)
        for check in (
            check_ledger_clean,
            check_billing_agrees,
            check_usage_billed_once,
            check_closes_complete,
            check_usage_as_answered,
            check_credits_once,
            check_charges_once,
            check_refunds_once,
            check_invoice_states,
            check_nothing_left_open,
        ):
            check(w, session)
    run_reconciliation(w)


# -- running it -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    config: SimConfig
    stats: Counter[str]
    seconds: float
    reconciliation: dict[str, Any]
    refund_supported: bool | None
    credits_supported: bool | None

    def render(self) -> str:
        s = self.stats
        lines = [
            f"simulation {self.config.label}: {self.seconds:.1f} s,"
            f" {s['operations']} operations over {self.config.days} days",
            _line("usage", s, "usage."),
            _line("pre-send", s, "presend."),
            _line("invoices", s, "invoices."),
            _line("charges", s, "charges"),
            _line("faults", s, "faults."),
            _line("voids", s, "voids."),
            _line("admin", s, "admin."),
            _line("refusals", s, "refusals."),
            _line(
                "other",
                s,
                ("adjustments.", "reversals.", "settings.", "customers.", "sippy.", "cycles."),
            ),
            f"refund action: {_refunds(self.refund_supported)}",
            f"void of a billed message: {_credits(self.credits_supported)}",
            f"reconciliation: {self.reconciliation or 'not run'}",
        ]
        return "\n".join(lines)


def _line(title: str, stats: Counter[str], prefixes: str | tuple[str, ...]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in sorted(stats.items()) if k.startswith(prefixes))
    return f"{title}: {shown or '-'}"


def _credits(supported: bool | None) -> str:
    if supported is None:
        return "never tried"
    return "credited on the next invoice (201)" if supported else "refused (409)"


def _refunds(supported: bool | None) -> str:
    if supported is None:
        return "never tried (no paid invoice was picked)"
    return "supported" if supported else "not supported (422): refunds skipped"


def simulate(
    config: SimConfig, database_url: str, make_api: MakeApi, start_sim: StartSim
) -> Summary:
    """Run the simulation of `config` on the migrated, empty database at `database_url`.

    Raises: SimulationFailed naming the seed, the size and every violated invariant.
    """
    started = time.perf_counter()
    w = build_world(config, database_url, make_api, start_sim)
    logging.getLogger().addHandler(w.errors)
    try:
        set_up(w)
        for h in range(config.days * 24):
            hour = config.start + timedelta(hours=h)
            if h and hour.hour == 0:
                daily_checks(w, h // 24)
            run_hour(w, hour)
        drain(w)
        final_checks(w)
    finally:
        logging.getLogger().removeHandler(w.errors)
        w.api.runtime.extras.pop("dispatch_charges", None)
    seconds = time.perf_counter() - started
    summary = Summary(
        config, w.stats, seconds, w.reconciliation, w.refund_supported, w.credits_supported
    )
    if w.violations:
        raise SimulationFailed(failure_report(w, summary))
    return summary


def failure_report(w: World, summary: Summary) -> str:
    shown = "\n  ".join(
        line + (f" (x{w.repeats[key]})" if w.repeats[key] > 1 else "")
        for line, key in zip(w.violations, w.violation_keys, strict=True)
    )
    more = w.stats["violations"] - sum(w.repeats[key] for key in w.violation_keys)
    return (
        f"simulation failed: {w.config.label} ({w.stats['violations']} violation(s))\n"
        f"  {shown}\n"
        + (f"  ... and {more} more\n" if more > 0 else "")
        + f"reproduce with: {w.config.command}\n{summary.render()}"
    )
