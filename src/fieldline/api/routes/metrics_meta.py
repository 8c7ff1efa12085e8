"""Metric metadata: what each metric of a device type is called, its unit, decimals and
kind, which the dashboard (and exports, and alert texts) show instead of the raw name."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field, model_validator

from fieldline.api.deps import DbConn, Operator, Viewer
from fieldline.api.routes.devices import DeviceId
from fieldline.domain.metrics import MetricKind, MetricMeta, applying
from fieldline.storage import audit as audit_store
from fieldline.storage import metric_metadata as meta_store

router = APIRouter(prefix="/api/v1", tags=["metric metadata"])

DeviceType = Annotated[
    str, Path(min_length=1, max_length=128, description="A device type, or * for every type")
]
MetricName = Annotated[str, Path(min_length=1, max_length=128)]


class MetricMetaIn(BaseModel):
    display_name: str = Field("", max_length=128, description="Shown instead of the name")
    unit: str = Field("", max_length=32, description="Shown after values: °C, %, kPa")
    decimals: int | None = Field(None, ge=0, le=9, description="Digits after the point")
    kind: MetricKind = MetricKind.NUMBER
    labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description='boolean and enum: a label per value, {"0": "off", "1": "on"}',
    )

    @model_validator(mode="after")
    def _labels_name_numbers(self) -> MetricMetaIn:
        for value in self.labels:
            try:
                float(value)
            except ValueError:
                raise ValueError(f'label keys are values such as "1"; {value!r} is not') from None
        if self.labels and self.kind not in (MetricKind.BOOLEAN, MetricKind.ENUM):
            raise ValueError("labels are for kind boolean or enum")
        return self


class MetricMetaOut(MetricMetaIn):
    device_type: str
    metric: str

    @classmethod
    def of(cls, meta: MetricMeta) -> MetricMetaOut:
        return cls(
            device_type=meta.device_type,
            metric=meta.metric,
            display_name=meta.display_name,
            unit=meta.unit,
            decimals=meta.decimals,
            kind=meta.kind,
            labels=meta.labels,
        )


class MetricMetaList(BaseModel):
    items: list[MetricMetaOut]


@router.get("/metric-metadata", response_model=MetricMetaList)
async def list_metadata(_: Viewer, conn: DbConn) -> MetricMetaList:
    """Every entry, by device type and metric."""
    return MetricMetaList(items=[MetricMetaOut.of(m) for m in await meta_store.all_entries(conn)])


@router.put("/device-types/{device_type}/metrics/{metric}", response_model=MetricMetaOut)
async def put_metadata(
    device_type: DeviceType, metric: MetricName, body: MetricMetaIn, user: Operator, conn: DbConn
) -> MetricMetaOut:
    """Set what `metric` is for devices of `device_type` (`*`: of every type without an
    entry of its own)."""
    meta = MetricMeta(
        device_type=device_type,
        metric=metric,
        display_name=body.display_name,
        unit=body.unit,
        decimals=body.decimals,
        kind=body.kind,
        labels=body.labels,
    )
    async with conn.transaction():
        stored = await meta_store.put(conn, meta, user.username)
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="metric_metadata.put",
            target_type="device_type",
            target_id=device_type,
            detail={"metric": metric, **body.model_dump(mode="json")},
        )
    return MetricMetaOut.of(stored)


@router.delete("/device-types/{device_type}/metrics/{metric}", status_code=204)
async def delete_metadata(
    device_type: DeviceType, metric: MetricName, user: Operator, conn: DbConn
) -> None:
    async with conn.transaction():
        await meta_store.delete(conn, device_type, metric)
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="metric_metadata.delete",
            target_type="device_type",
            target_id=device_type,
            detail={"metric": metric},
        )


@router.get("/devices/{device_id}/metric-metadata", response_model=MetricMetaList)
async def device_metadata(device_id: DeviceId, _: Viewer, conn: DbConn) -> MetricMetaList:
    """The entries that apply to this device's metrics: its type's, else `*`'s."""
    device_type = await meta_store.device_type_of(conn, device_id)
    chosen = applying(await meta_store.for_types(conn, [device_type]), device_type)
    return MetricMetaList(items=[MetricMetaOut.of(chosen[m]) for m in sorted(chosen)])
