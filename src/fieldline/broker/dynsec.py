"""Mosquitto dynamic-security documents and commands, as pure data.

Everything fieldline writes into the plugin's JSON file or sends on
`$CONTROL/dynamic-security/v1` is built here, so the managed and the external
adapter agree on what a device, its role and the service account look like,
and a reconcile compares like with like.

Mosquitto 2.0.11 does not substitute `%u`/`%c` in dynsec ACLs, so every device
gets its own role `device:<id>`. A client fieldline manages carries a marker in
its `textdescription` together with a fingerprint of the registry hash its
password came from: the broker never reveals password hashes, and the
fingerprint is how a reconcile tells a rotated secret from an unchanged one.
Each device client is bound to the client id equal to its username (`clientid`):
Mosquitto then refuses a device that presents any other client id ("not authorized"),
before it would take over that client id's session. fieldline's own accounts stay
unbound, as each of their connections has a client id of its own.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fieldline.broker.base import Drift
from fieldline.domain.devices import DeviceAccess
from fieldline.domain.topics import Downlink, TopicScheme, Uplink
from fieldline.security.passwords import SecretHash

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
ADMIN_ROLE = "fieldline-admin"
SERVICE_ROLE = "fieldline-service"
DEVICE_ROLE_PREFIX = "device:"
DEVICE_MARKER = "fieldline-device"
# Mosquitto 2.0.x hashes with a fixed 12-byte salt and skips clients whose
# stored salt has another length.
MOSQUITTO_SALT_BYTES = 12

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    acltype: str
    topic: str
    allow: bool = True
    priority: int = 0

    def to_json(self) -> JsonObject:
        return {
            "acltype": self.acltype,
            "topic": self.topic,
            "allow": self.allow,
            "priority": self.priority,
        }


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """What the broker holds for one client, as far as a reconcile cares."""

    username: str
    clientid: str | None  # the only client id the broker accepts for it (None: any)
    fingerprint: str | None  # None: no fieldline secret installed
    enabled: bool
    roles: frozenset[str]
    managed: bool  # carries fieldline's marker


def device_record(device_id: str, *, fingerprint: str | None, enabled: bool) -> ClientRecord:
    """A device client as fieldline installs it."""
    return ClientRecord(
        username=device_id,
        clientid=device_id,
        fingerprint=fingerprint,
        enabled=enabled,
        roles=frozenset({device_role(device_id)}),
        managed=True,
    )


def device_role(device_id: str) -> str:
    return DEVICE_ROLE_PREFIX + device_id


def fingerprint(secret_hash: str) -> str:
    """A short, non-reversible name for one registry hash."""
    return hashlib.sha256(secret_hash.encode()).hexdigest()[:32]


def describe(fp: str | None) -> str:
    return DEVICE_MARKER if fp is None else f"{DEVICE_MARKER} secret={fp}"


def parse_description(text: object) -> tuple[bool, str | None]:
    """(managed by fieldline, secret fingerprint) from a client's textdescription."""
    if not isinstance(text, str) or not text.startswith(DEVICE_MARKER):
        return False, None
    _, _, rest = text.partition(" secret=")
    return True, rest or None


def device_acls(topics: TopicScheme, device_id: str) -> frozenset[Acl]:
    acls = {Acl("publishClientSend", topic) for topic in topics.device_publishes(device_id)}
    for topic in topics.device_subscribes(device_id):
        acls |= {
            Acl("subscribePattern", topic),
            Acl("unsubscribePattern", topic),
            Acl("publishClientReceive", topic),
        }
    return frozenset(acls)


def service_acls(topics: TopicScheme) -> frozenset[Acl]:
    acls: set[Acl] = set()
    for kind in Uplink:
        topic = f"{topics.prefix}/+/{kind.value}"
        # Mosquitto checks a shared subscription against its full `$share/...` filter.
        shared = f"$share/+/{topic}"
        acls |= {
            Acl("subscribePattern", topic),
            Acl("subscribePattern", shared),
            Acl("unsubscribePattern", topic),
            Acl("unsubscribePattern", shared),
            Acl("publishClientReceive", topic),
        }
    for down in Downlink:
        acls.add(Acl("publishClientSend", f"{topics.prefix}/+/{down.value}"))
    return frozenset(acls)


def admin_acls() -> frozenset[Acl]:
    # As `mosquitto_ctrl dynsec init` grants, minus its blanket `#` access.
    control = "$CONTROL/dynamic-security/#"
    return frozenset(
        {
            Acl("publishClientSend", control),
            Acl("publishClientReceive", control),
            Acl("subscribePattern", control),
            Acl("publishClientReceive", "$SYS/#"),
            Acl("subscribePattern", "$SYS/#"),
            Acl("unsubscribePattern", "#"),
        }
    )


def role_json(name: str, acls: Iterable[Acl]) -> JsonObject:
    return {"rolename": name, "acls": [acl.to_json() for acl in sorted(acls)]}


def hashed_client_json(
    username: str,
    secret_hash: str,
    *,
    roles: Sequence[str],
    enabled: bool = True,
    description: str | None = None,
    clientid: str | None = None,
) -> JsonObject:
    """A client entry for the plugin's file, carrying a registry hash verbatim."""
    decoded = SecretHash.decode(secret_hash)
    if len(decoded.salt) != MOSQUITTO_SALT_BYTES:
        raise ValueError(f"mosquitto needs a {MOSQUITTO_SALT_BYTES}-byte salt")
    entry: JsonObject = {
        "username": username,
        "password": base64.b64encode(decoded.digest).decode(),
        "salt": base64.b64encode(decoded.salt).decode(),
        "iterations": decoded.iterations,
        "roles": [{"rolename": role} for role in roles],
    }
    if clientid is not None:
        entry["clientid"] = clientid
    if description is not None:
        entry["textdescription"] = description
    if not enabled:
        entry["disabled"] = True
    return entry


def config_document(
    *,
    topics: TopicScheme,
    devices: Iterable[DeviceAccess],
    admin_username: str,
    admin_hash: str,
    service_username: str,
    service_hash: str,
) -> JsonObject:
    """The whole plugin file for a broker fieldline manages: the registry, nothing else."""
    clients = [
        hashed_client_json(admin_username, admin_hash, roles=[ADMIN_ROLE]),
        hashed_client_json(service_username, service_hash, roles=[SERVICE_ROLE]),
    ]
    roles = [role_json(ADMIN_ROLE, admin_acls()), role_json(SERVICE_ROLE, service_acls(topics))]
    for device in devices:
        clients.append(
            hashed_client_json(
                device.device_id,
                device.secret_hash,
                roles=[device_role(device.device_id)],
                enabled=device.enabled,
                description=describe(fingerprint(device.secret_hash)),
                clientid=device.device_id,
            )
        )
        roles.append(
            role_json(device_role(device.device_id), device_acls(topics, device.device_id))
        )
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": False,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def parse_clients(entries: object) -> dict[str, ClientRecord]:
    """Clients from the plugin's file or a verbose `listClients` answer."""
    records: dict[str, ClientRecord] = {}
    if not isinstance(entries, list):
        return records
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("username"), str):
            continue
        managed, fp = parse_description(entry.get("textdescription", entry.get("textDescription")))
        roles = frozenset(
            role["rolename"]
            for role in entry.get("roles") or []
            if isinstance(role, dict) and isinstance(role.get("rolename"), str)
        )
        clientid = entry.get("clientid")
        records[entry["username"]] = ClientRecord(
            username=entry["username"],
            clientid=clientid if isinstance(clientid, str) and clientid else None,
            fingerprint=fp,
            enabled=not entry.get("disabled", False),
            roles=roles,
            managed=managed,
        )
    return records


def parse_roles(entries: object) -> dict[str, frozenset[Acl]]:
    """Roles and their ACLs from the plugin's file or a verbose `listRoles` answer."""
    roles: dict[str, frozenset[Acl]] = {}
    if not isinstance(entries, list):
        return roles
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("rolename"), str):
            continue
        roles[entry["rolename"]] = frozenset(
            Acl(
                acltype=str(acl.get("acltype")),
                topic=str(acl.get("topic")),
                allow=bool(acl.get("allow", False)),
                priority=int(acl.get("priority", 0)),
            )
            for acl in entry.get("acls") or []
            if isinstance(acl, dict)
        )
    return roles


def compute_drift(
    *,
    topics: TopicScheme,
    devices: Iterable[DeviceAccess],
    clients: Mapping[str, ClientRecord],
    roles: Mapping[str, frozenset[Acl]],
) -> Drift:
    """Compare the registry with what a broker holds."""
    registry = {device.device_id: device for device in devices}
    missing = sorted(device_id for device_id in registry if device_id not in clients)
    unexpected = sorted(
        name for name, record in clients.items() if record.managed and name not in registry
    )
    changed = sorted(
        device_id
        for device_id, device in registry.items()
        if device_id in clients
        and not _matches(topics, device, clients[device_id], roles.get(device_role(device_id)))
    )
    return Drift(missing=tuple(missing), unexpected=tuple(unexpected), changed=tuple(changed))


def _matches(
    topics: TopicScheme, device: DeviceAccess, record: ClientRecord, acls: frozenset[Acl] | None
) -> bool:
    return (
        record.fingerprint == fingerprint(device.secret_hash)
        and record.clientid == device.device_id
        and record.enabled == device.enabled
        and device_role(device.device_id) in record.roles
        and acls == device_acls(topics, device.device_id)
    )


# Commands on $CONTROL/dynamic-security/v1 (Mosquitto 2.0 names and fields).


def create_role(name: str, acls: Iterable[Acl]) -> JsonObject:
    return {"command": "createRole", **role_json(name, acls)}


def delete_role(name: str) -> JsonObject:
    return {"command": "deleteRole", "rolename": name}


def add_role_acl(name: str, acl: Acl) -> JsonObject:
    return {"command": "addRoleACL", "rolename": name, **acl.to_json()}


def remove_role_acl(name: str, acl: Acl) -> JsonObject:
    return {
        "command": "removeRoleACL",
        "rolename": name,
        "acltype": acl.acltype,
        "topic": acl.topic,
    }


def create_client(
    username: str,
    *,
    password: str | None,
    roles: Sequence[str],
    description: str | None = None,
    clientid: str | None = None,
) -> JsonObject:
    command: JsonObject = {
        "command": "createClient",
        "username": username,
        "roles": [{"rolename": role} for role in roles],
    }
    if clientid is not None:
        command["clientid"] = clientid
    if password is not None:
        command["password"] = password
    if description is not None:
        command["textdescription"] = description
    return command


def set_secret(username: str, *, password: str, description: str) -> JsonObject:
    # modifyClient (unlike setClientPassword) also records the new fingerprint;
    # either way Mosquitto disconnects the client's live sessions.
    return {
        "command": "modifyClient",
        "username": username,
        "password": password,
        "textdescription": description,
    }


def create_device_client(device_id: str, *, password: str | None, description: str) -> JsonObject:
    """A device's client: its own role, and its own id as the only client id it may use."""
    return create_client(
        device_id,
        password=password,
        roles=[device_role(device_id)],
        description=description,
        clientid=device_id,
    )


def bind_client_id(username: str) -> JsonObject:
    # Mosquitto disconnects the client's live sessions; a device with the right
    # client id reconnects at once, one with another id is refused from now on.
    return {"command": "modifyClient", "username": username, "clientid": username}


def add_client_role(username: str, role: str) -> JsonObject:
    return {"command": "addClientRole", "username": username, "rolename": role}


def enable_client(username: str) -> JsonObject:
    return {"command": "enableClient", "username": username}


def disable_client(username: str) -> JsonObject:
    return {"command": "disableClient", "username": username}


def delete_client(username: str) -> JsonObject:
    return {"command": "deleteClient", "username": username}


def list_clients() -> JsonObject:
    return {"command": "listClients", "verbose": True, "count": -1, "offset": 0}


def list_roles() -> JsonObject:
    return {"command": "listRoles", "verbose": True, "count": -1, "offset": 0}


def sync_role_commands(
    name: str, expected: frozenset[Acl], actual: frozenset[Acl] | None
) -> list[JsonObject]:
    """Commands that make role `name` hold exactly `expected`."""
    if actual is None:
        return [create_role(name, expected)]
    commands = [remove_role_acl(name, acl) for acl in sorted(actual - expected)]
    commands += [add_role_acl(name, acl) for acl in sorted(expected - actual)]
    return commands
