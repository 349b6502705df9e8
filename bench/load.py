"""Generated emails and the SMTP load generator.

Emails are deterministic for a seed: 25% from the 24 contacts of bench/routing.yaml (key
accounts go to the vip queue, with preferred agents), 15% to billing@, the rest to
support@ from distinct senders, with subjects that hit the classification and
route-to-queue rules (technical, invoices, urgent words). Bodies are 0.6-2 KB of text;
a fifth are multipart/alternative with an HTML part. Each has a unique Message-ID, by which
the harness joins its arrival time to the case store.

Delivery is over SMTP, as a mail server would: a pool of ``concurrency`` threads, each
keeping one SMTP session open and sending its messages one after another (at most
``concurrency`` messages in flight). ``rate`` > 0 paces message starts at that many per
second; a ``451`` is retried after a pause, as a sending MTA would.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import smtplib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

CONTACTS = (
    [f"c0{i}@globex.example" for i in range(1, 7)]
    + [f"c0{i}@initech.example" for i in range(1, 7)]
    + [f"c0{i}@umbrella.example" for i in range(1, 5)]
    + [f"c0{i}@hooli.example" for i in range(1, 5)]
    + [f"c0{i}@stark.example" for i in range(1, 5)]
)
SUPPORT = "support@bench.example"
BILLING = "billing@bench.example"

TOPICS_GENERAL = [
    "Question about my account settings",
    "How do I export my data",
    "Feature request: dark mode",
    "Cannot find the shipping status",
    "Change of address for our team",
    "Feedback on the new dashboard",
]
TOPICS_TECHNICAL = [
    "Login fails with an error after update",
    "API returns error 500 on /orders",
    "App crash when uploading a file",
    "Password reset link does not work",
    "Possible bug in the CSV import",
]
TOPICS_BILLING = [
    "Invoice INV-{n} has the wrong VAT number",
    "Refund for order {n}",
    "We were double-charged this month",
    "Payment method update",
    "Question about invoice {n}",
]
URGENT = ["URGENT: ", "Outage: ", "", "", "", "", "", "", "", ""]
WORDS = [
    "account", "order", "shipment", "dashboard", "export", "report", "user", "team", "admin",
    "settings", "plan", "upgrade", "renewal", "contract", "integration", "webhook", "timeout",
    "browser", "mobile", "screen", "message", "customer", "access", "permission", "region",
    "backup", "restore", "schedule", "notification", "template",
]  # fmt: skip


@dataclass
class Email:
    index: int
    message_id: str
    mail_from: str
    rcpt: str
    raw: bytes


def _body(rng: random.Random) -> str:
    paras = []
    for _ in range(rng.randint(2, 5)):
        sentences = []
        for _ in range(rng.randint(2, 5)):
            words = rng.choices(WORDS, k=rng.randint(6, 14))
            sentences.append(" ".join(words).capitalize() + ".")
        paras.append(" ".join(sentences))
    return "Hello,\r\n\r\n" + "\r\n\r\n".join(paras) + "\r\n\r\nBest regards,\r\nA customer\r\n"


def generate(n: int, seed: int, run_tag: str) -> list[Email]:
    rng = random.Random(seed)
    out: list[Email] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.25:
            sender = rng.choice(CONTACTS)
            rcpt = SUPPORT
            topic = rng.choice(TOPICS_GENERAL + TOPICS_TECHNICAL)
        elif roll < 0.40:
            sender = f"payer{i}@customer{i % 97}.example"
            rcpt = BILLING
            topic = rng.choice(TOPICS_BILLING)
        else:
            sender = f"user{i}@customer{i % 97}.example"
            rcpt = SUPPORT
            topic = rng.choice(TOPICS_GENERAL * 3 + TOPICS_TECHNICAL * 2 + TOPICS_BILLING)
        subject = rng.choice(URGENT) + topic.format(n=10000 + i)
        mid = f"bench-{run_tag}-{i}@load.example"
        body = _body(rng)
        headers = [
            f"From: Customer {i} <{sender}>",
            f"To: {rcpt}",
            f"Subject: {subject}",
            f"Message-ID: <{mid}>",
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}",
            "MIME-Version: 1.0",
        ]
        if rng.random() < 0.2:
            html = "<html><body>" + "".join(f"<p>{p}</p>" for p in body.split("\r\n\r\n")) + "</body></html>"
            boundary = f"b{i:08d}"
            headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
            parts = [
                f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}",
                f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n",
                f"--{boundary}--\r\n",
            ]
            text = "\r\n".join(headers) + "\r\n\r\n" + "".join(parts)
        else:
            headers.append("Content-Type: text/plain; charset=utf-8")
            text = "\r\n".join(headers) + "\r\n\r\n" + body
        out.append(Email(i, mid, sender, rcpt, text.encode()))
    return out


@dataclass
class Delivery:
    scheduled: float  # when the pacing wanted it sent (epoch seconds)
    arrival: float = 0.0  # handed to SMTP (epoch seconds): the latency origin
    done: float = 0.0  # 250 received
    attempts: int = 0
    error: str | None = None


@dataclass
class SmtpLoad:
    host: str
    port: int
    concurrency: int
    rate: float
    deliveries: dict[str, Delivery] = field(default_factory=dict)
    retries: int = 0
    reconnects: int = 0

    def __post_init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()

    def _conn(self) -> smtplib.SMTP:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = smtplib.SMTP(self.host, self.port, local_hostname="load.example", timeout=120)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        with self._lock:
            self.reconnects += 1

    def _send(self, email: Email, d: Delivery) -> None:
        for attempt in range(1, 21):
            d.attempts = attempt
            try:
                conn = self._conn()
                if attempt == 1:
                    d.arrival = time.time()
                conn.sendmail(email.mail_from, [email.rcpt], email.raw)
                d.done = time.time()
                d.error = None
                return
            except smtplib.SMTPResponseException as exc:
                d.error = f"{exc.smtp_code} {exc.smtp_error!r}"
                if 400 <= exc.smtp_code < 500:
                    with self._lock:
                        self.retries += 1
                    time.sleep(min(0.2 * attempt, 2.0))
                    continue
                return  # 5xx: permanent
            except smtplib.SMTPRecipientsRefused as exc:
                d.error = f"recipients refused {exc.recipients!r}"
                return
            except (smtplib.SMTPException, OSError) as exc:
                d.error = f"{type(exc).__name__}: {exc}"
                self._drop()
                time.sleep(min(0.2 * attempt, 2.0))
        return

    async def run(self, emails: list[Email], on_done: Callable[[Email, Delivery], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(self.concurrency)
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="smtp")
        t0 = time.time()
        pending: set[asyncio.Future[None]] = set()
        try:
            for i, email in enumerate(emails):
                scheduled = t0 + (i / self.rate if self.rate > 0 else 0.0)
                if self.rate > 0:
                    delay = scheduled - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await sem.acquire()
                d = Delivery(scheduled=scheduled if self.rate > 0 else time.time())
                self.deliveries[email.message_id] = d
                fut = loop.run_in_executor(pool, self._send, email, d)
                pending.add(fut)

                def done(f: asyncio.Future[None], email: Email = email, d: Delivery = d) -> None:
                    sem.release()
                    pending.discard(f)
                    if on_done is not None:
                        on_done(email, d)

                fut.add_done_callback(done)
            if pending:
                await asyncio.gather(*list(pending))
        finally:
            pool.shutdown(wait=True)
