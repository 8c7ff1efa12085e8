"""`fieldline certs`: the CA and the MQTT broker's TLS certificate."""

from __future__ import annotations

from pathlib import Path

import click

from fieldline.cli.common import load


@click.command()
@click.option(
    "--san",
    "names",
    multiple=True,
    metavar="NAME",
    help="A DNS name or IP address devices reach the broker at, added to localhost, "
    "127.0.0.1, ::1, this machine's hostname and the configured MQTT hosts (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write to [default: <FIELDLINE_DATA_DIR>/certs]",
)
@click.option("--key-type", type=click.Choice(["ecdsa", "rsa"]), default="ecdsa", show_default=True)
@click.option(
    "--force",
    is_flag=True,
    help="Also replace an existing CA: every device must then be given the new ca.crt.",
)
def certs(names: tuple[str, ...], out: Path | None, key_type: str, force: bool) -> None:
    """Create a CA and the MQTT broker's TLS certificate signed by it.

    Run again to renew the server certificate or change its names: an existing CA
    is kept, as devices trust it, unless --force is given.
    """
    from fieldline.security.certs import (
        WILDCARD_HOSTS,
        CertificateAuthorityError,
        default_names,
        issue_certificates,
    )

    settings = load()
    configured = [settings.mqtt_host, settings.advertised_mqtt_host]
    wanted = [*default_names(), *(h for h in configured if h not in WILDCARD_HOSTS), *names]
    try:
        issued = issue_certificates(
            out or settings.data_dir / "certs",
            names=wanted,
            key_type="rsa" if key_type == "rsa" else "ecdsa",
            force=force,
        )
    except (ValueError, CertificateAuthorityError) as exc:
        raise click.ClickException(str(exc)) from exc
    files = issued.files
    state = "created" if issued.ca_created else "kept (already there)"
    lines = [
        f"CA certificate      {files.ca_cert}  {state}",
        f"CA key              {files.ca_key}  (keep private: it can sign for any name)",
        f"server certificate  {files.server_cert}  valid until {issued.server_expires:%Y-%m-%d}",
        f"server key          {files.server_key}",
        f"names               {', '.join(issued.names)}",
        f"CA fingerprint      SHA256 {issued.ca_fingerprint}",
    ]
    if issued.ca_created and force:
        lines.append("The CA is new: give every device the new ca.crt.")
    if settings.mqtt_tls_port is None:
        lines.append("Set FIELDLINE_MQTT_TLS_PORT (8883 is usual) to serve MQTT over TLS.")
    else:
        lines.append("Restart fieldline for the broker to serve the new certificate.")
    click.echo("\n".join(lines))
