"""The registry's tables, as SQLAlchemy models: jobs, attempts, events, health
samples and daily summaries; and how a job row is read."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every datetime ugro stores is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "ugro_jobs"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    gpus: Mapped[int] = mapped_column(Integer)
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)
    gpu_indices: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[str] = mapped_column(Text)  # JSON, secrets redacted
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    placed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_signal: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The progress scan's last finding: ProgressInfo fields and "status" (JSON).
    progress: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The lease token of the job's current placement: a worker's claim names it, so
    # a message of an earlier placement claims nothing.
    placement_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # A gang job's placement (JSON): [[node, [gpu indices]], ...] in rank order;
    # ``node`` and ``gpu_indices`` above are its rank 0's.
    members: Mapped[str | None] = mapped_column(Text, nullable=True)
    # A queued job kept out of the live queue: "after" (its dependencies are not
    # met yet) or "slot" (its array runs max_running tasks already); None: free
    # to be placed (``ugro.jobs.dependencies``).
    hold: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    # A task of an array (or sweep): its array's id and its index there.
    array_id: Mapped[str | None] = mapped_column(String(80), nullable=True, index=True)
    array_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Who submitted it (the OS user, or UGRO_USER for a shared account), and the
    # group or project it counts for (``--group``), if any.
    user: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    group_name: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # Its ``--tag`` labels (JSON list, ``tags_column``), None when it has none: what
    # ``list_jobs(tags=...)`` filters on. A row written before the column was added
    # has None too; its tags stay in its spec.
    tags: Mapped[str | None] = mapped_column(Text, nullable=True)

    # An array's tasks by hold and status, in index order: what counting its
    # running tasks and finding the next one waiting for a slot read, whatever
    # the array's size (``ugro.registry.holds.take_slots``).
    __table_args__ = (
        Index("ix_ugro_jobs_array_slots", "array_id", "hold", "status", "array_index"),
    )


class DependencyRow(Base):
    """That ``job_id`` waits on ``on_job`` (``ugro.jobs.dependencies``: kind)."""

    __tablename__ = "ugro_dependencies"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("ugro_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    on_job: Mapped[str] = mapped_column(String(80), primary_key=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))


class ArrayRow(Base):
    """An array of tasks submitted as one (``ugro submit --array``, ``ugro sweep``):
    each task a job whose ``array_id`` is this id."""

    __tablename__ = "ugro_arrays"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "array" | "sweep"
    count: Mapped[int] = mapped_column(Integer)
    # At most this many tasks placed or running at once; None: no cap.
    max_running: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # A sweep's parameter names, in order (JSON list); None for a plain array.
    params: Mapped[str | None] = mapped_column(Text, nullable=True)


class AttemptRow(Base):
    __tablename__ = "ugro_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("ugro_jobs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    node: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    gpu_indices: Mapped[str] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_signal: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)


class MemberRow(Base):
    """One member of a gang job's attempt: the part of it that runs on one node.

    Its row is its claim: one insert per (job, attempt, rank), so a second delivery
    of a member's message runs nothing."""

    __tablename__ = "ugro_members"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("ugro_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255))
    gpu_indices: Mapped[str] = mapped_column(Text)  # JSON list
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_signal: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class EventRow(Base):
    __tablename__ = "ugro_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    job_id: Mapped[str | None] = mapped_column(String(80), nullable=True, index=True)
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str] = mapped_column(Text)


class NodeSampleRow(Base):
    """One health sweep's finding for one node (kept, bounded, for the daily
    summary and `ugro nodes --history`; see ``ugro.health.samples``)."""

    __tablename__ = "ugro_node_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    score: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(16))  # INFO | WARNING | CRITICAL
    breaker: Mapped[str] = mapped_column(String(16))  # closed | open | half_open
    reachable: Mapped[bool] = mapped_column(Boolean)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpu_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    disk_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Jobs waiting in the queue (cluster-wide) when the sample was taken.
    pending: Mapped[int] = mapped_column(Integer, default=0)
    # JSON list, one object per GPU: index, utilization, memory_used_mb,
    # memory_total_mb, temperature_c, power_w, busy (leased by a job), error.
    gpus: Mapped[str] = mapped_column(Text, default="[]")
    reasons: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of strings


class SummaryRow(Base):
    """One day's daily summary: the row is the claim that makes it written once
    (``date`` is unique), whoever else runs the daily task at the same moment; see
    ``ugro.summary.daily``."""

    __tablename__ = "ugro_summaries"

    date: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, local
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str] = mapped_column(String(255))
    written_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Delivery to the notification URLs: claimed like the writing, so that two
    # tasks never both send it; cleared again when sending failed.
    delivery_claimed_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def job_from(mapping: Any) -> JobRow:
    """A job row as read: a plain instance of the mapped class, filled in directly.
    (The declarative constructor fires an attribute event per column, a tenth of a
    millisecond per row; a row read is never flushed back, so none is needed.)"""
    job = _new_job_row()
    values = job.__dict__
    values.update(mapping)
    for key in ("created_at", "placed_at", "started_at", "finished_at"):
        values[key] = as_utc(values[key])
    return job


# Instances made this way skip the constructor, which is what configures the
# mappers on first use: configured here instead.
configure_mappers()
_new_job_row: Callable[[], JobRow] = JobRow.__mapper__.class_manager.new_instance


def tags_column(tags: list[str] | None) -> str | None:
    """A job's tags as its ``tags`` column holds them: a compact JSON list, each tag
    quoted, so a filter finds ``"tag"`` whole (tags are safe names: no quotes)."""
    return json.dumps(tags, separators=(",", ":")) if tags else None


def gpu_list(row: JobRow) -> list[int]:
    """The GPU indices a job holds or held (a gang job's: its rank 0's)."""
    return list(json.loads(row.gpu_indices)) if row.gpu_indices else []


def placement_of(row: JobRow) -> list[tuple[str, list[int]]]:
    """Every node a placed or running job holds GPUs of, with those GPUs, in rank
    order: a gang job's members, a one-node job's one node."""
    if row.members:
        return [(str(node), [int(i) for i in gpus]) for node, gpus in json.loads(row.members)]
    return [(row.node, gpu_list(row))] if row.node else []
