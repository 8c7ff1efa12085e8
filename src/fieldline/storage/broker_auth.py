"""The SQL EMQX 5 runs against fieldline's registry, over the views of migrations 2 and 13.

These strings go verbatim into EMQX's `authentication` and `authorization` configuration
(docs/brokers.md). EMQX turns each `${username}` and `${clientid}` into a parameter of a
prepared statement, so neither ever becomes SQL text. A device finds its row only under
its own id as client id: with any other it is refused, and cannot take over the session
of the client that id belongs to.
"""

from __future__ import annotations

EMQX_AUTHN_QUERY = (
    "SELECT password_hash, salt, is_superuser FROM emqx_mqtt_user"
    " WHERE username = ${username} AND clientid = ${clientid} LIMIT 1"
)
EMQX_AUTHZ_QUERY = (
    "SELECT permission, action, topic FROM emqx_acl"
    " WHERE username = ${username} AND clientid = ${clientid}"
)

# The database cannot see FIELDLINE_TOPIC_PREFIX; emqx_acl reads it from this setting
# of EMQX's database role and uses `devices` when it is unset.
TOPIC_PREFIX_SETTING = "fieldline.topic_prefix"
