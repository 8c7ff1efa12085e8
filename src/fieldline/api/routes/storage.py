"""Storage accounting: the database's size, per tier and per device, and when the disk fills."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fieldline.api.deps import Context, DbConn, Viewer
from fieldline.blobs.open import location
from fieldline.storage import accounting, archive, retention
from fieldline.storage.backups import last_backup, last_verification

router = APIRouter(prefix="/api/v1/storage", tags=["storage"])


class RetentionRunOut(BaseModel):
    ran_at: datetime
    dropped: list[str] = Field(description="The partitions the last run dropped")
    bytes: int
    rows: int = Field(description="PostgreSQL's estimate")


class TierOut(BaseModel):
    tier: str = Field(description="raw, hourly or daily")
    retention_days: int = Field(description="0 = kept for good")
    partitions: int
    bytes: int
    rows: int = Field(description="PostgreSQL's estimate, kept by ANALYZE")
    oldest: date | None
    newest: date | None = Field(description="Today at the latest (partitions are made ahead)")
    last_retention: RetentionRunOut | None


class DiskOut(BaseModel):
    path: str
    total_bytes: int
    free_bytes: int


class DevicePointsOut(BaseModel):
    device_id: str
    points: int


class TopDevicesOut(BaseModel):
    measured_at: datetime = Field(description="The worker's hourly snapshot")
    since: date | None = Field(description="Points are counted from this day (raw tier's first)")
    devices: list[DevicePointsOut]


class ArchiveRunOut(BaseModel):
    ran_at: datetime
    files: int = Field(description="Files the run wrote")
    rows: int
    bytes: int
    error: str | None = Field(description="Why the run stopped; null when it succeeded")


class ArchiveOut(BaseModel):
    location: str = Field(description="FIELDLINE_ARCHIVE_URL: a directory or s3://bucket/prefix")
    hours: int = Field(description="Hours of raw points archived there")
    days: int = Field(description="Days of aggregates archived there")
    points: int
    bytes: int
    oldest_hour: datetime | None = Field(description="The first archived hour")
    newest_hour: datetime | None = Field(description="The last archived hour")
    last_run: ArchiveRunOut | None


class BackupOut(BaseModel):
    id: str
    finished_at: datetime
    bytes: int = Field(description="The database's dump and the data directory's files")


class VerificationOut(BaseModel):
    backup_id: str
    verified_at: datetime
    ok: bool = Field(description="Restored into a scratch database and matched its manifest")
    problem: str | None = Field(description="Why it failed; null when ok")


class BackupsOut(BaseModel):
    location: str = Field(description="FIELDLINE_BACKUP_URL (default <data_dir>/backups)")
    last_backup: BackupOut | None = Field(description="The newest backup to this location")
    last_verification: VerificationOut | None = Field(
        description="The newest verification, passed or failed"
    )
    last_verified_at: datetime | None = Field(
        description="When a backup last restored and matched its manifest"
    )


class StorageOut(BaseModel):
    database_bytes: int
    tiers: list[TierOut]
    disk: DiskOut | None = Field(
        description="The disk of the embedded database; null for an external server"
    )
    growth_bytes_per_day: float | None = Field(
        description="Measured over the last week of snapshots, net of retention"
    )
    days_until_full: float | None
    why_no_estimate: str | None = Field(description="Why days_until_full is null")
    top_devices: TopDevicesOut | None
    backups: BackupsOut = Field(
        description="Backups to FIELDLINE_BACKUP_URL and their verification"
    )
    archive: ArchiveOut | None = Field(description="The Parquet archive; null when not set")


@router.get("", response_model=StorageOut)
async def storage(_: Viewer, conn: DbConn, context: Context) -> StorageOut:
    settings = context.settings
    now = datetime.now(UTC)
    size = await accounting.database_bytes(conn)
    runs = await retention.last_runs(conn)
    tiers = [
        TierOut(
            tier=t.tier,
            retention_days=settings.retention_days[t.tier],
            partitions=t.partitions,
            bytes=t.bytes,
            rows=t.rows,
            oldest=t.oldest,
            # Partitions are made ahead of time: the days they cover end today.
            newest=min(t.newest, now.date()) if t.newest else None,
            last_retention=RetentionRunOut(**asdict(runs[t.tier])) if t.tier in runs else None,
        )
        for t in await accounting.tier_sizes(conn)
    ]
    disk = accounting.database_disk(settings)
    growth = await accounting.growth_per_day(conn, now, size)
    days = accounting.days_until_full(disk.free_bytes, growth) if disk else None
    snapshot = await accounting.latest_snapshot(conn)
    return StorageOut(
        archive=await _archive(conn, settings.archive_url),
        backups=await _backups(conn, settings.backup_location),
        database_bytes=size,
        tiers=tiers,
        disk=DiskOut(path=disk.path, total_bytes=disk.total_bytes, free_bytes=disk.free_bytes)
        if disk
        else None,
        growth_bytes_per_day=growth,
        days_until_full=days,
        why_no_estimate=(
            None if days is not None else _why(bool(settings.database_url), disk, growth)
        ),
        top_devices=TopDevicesOut(
            measured_at=snapshot.taken_at,
            since=snapshot.since,
            devices=[
                DevicePointsOut(device_id=d.device_id, points=d.points)
                for d in snapshot.top_devices
            ],
        )
        if snapshot
        else None,
    )


async def _archive(conn: DbConn, url: str | None) -> ArchiveOut | None:
    if not url:
        return None
    target = location(url)
    held = await archive.holdings(conn, target)
    run = await archive.last_run(conn, target)
    return ArchiveOut(
        location=target,
        hours=held.hours,
        days=held.days,
        points=held.rows,
        bytes=held.bytes,
        oldest_hour=held.oldest,
        newest_hour=held.newest,
        last_run=ArchiveRunOut(**asdict(run)) if run else None,
    )


def _why(external: bool, disk: accounting.Disk | None, growth: float | None) -> str:
    if external:
        return (
            "the database is an external server, whose disk fieldline cannot see: watch it "
            "where the server runs"
        )
    if disk is None:
        return "the embedded database's directory cannot be read"
    if growth is None:
        return "the worker has not measured the database for an hour yet"
    return "the database is not growing"


async def _backups(conn: DbConn, url: str) -> BackupsOut:
    """The backups' section (docs/data.md, "Backups"): the worker records them."""
    target = location(url)
    taken = await last_backup(conn, target)
    checked = await last_verification(conn)
    passed = checked if checked is None or checked.ok else await last_verification(conn, ok=True)
    return BackupsOut(
        location=target,
        last_backup=BackupOut(id=taken.id, finished_at=taken.finished_at, bytes=taken.bytes)
        if taken
        else None,
        last_verification=VerificationOut(
            backup_id=checked.backup_id,
            verified_at=checked.verified_at,
            ok=checked.ok,
            problem=checked.problem,
        )
        if checked
        else None,
        last_verified_at=passed.verified_at if passed else None,
    )
