"""An OPC UA test server (Python asyncua) for test_opcua.py.

Usage: opcua_server.py PORT PKI_DIR COMMAND_FILE

Endpoints: SecurityPolicy None and Basic256Sha256 SignAndEncrypt, anonymous
or the user "operator" / "secret". Namespace "urn:gantry:test" (index 2):

  Mixer (ns=2;s=Mixer)
    Temperature  ns=2;s=Mixer.Temperature  Double   21.5
    Count        ns=2;s=Mixer.Count        Int32    42
    Running      ns=2;s=Mixer.Running      Boolean  true
    Recipe       ns=2;s=Mixer.Recipe       String   "R-7"
    Mode         ns=2;s=Mixer.Mode         Int32    1   (an enum index)
    Counters     ns=2;s=Mixer.Counters     folder with Good (Int32 10), Scrap (Int32 2), Extra (Double)

The certificate is created once in PKI_DIR and reused, so a restarted
server presents the same certificate. Commands are lines appended to
COMMAND_FILE (read every 0.1 s):
  set NODE VALUE    (typed like the node's current value)
  add NAME VALUE    (a new Int32 variable in Counters)
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

logging.basicConfig(level=logging.WARNING)


class Users:
    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username is None:
            return User(role=UserRole.User)
        if username == "operator" and password == "secret":
            return User(role=UserRole.User, name=username)
        return None


async def main(port: int, pki: Path, commands: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    cert, key = pki / "server-cert.der", pki / "server-key.pem"
    uri = "urn:gantry:test:server"
    if not cert.exists():
        await setup_self_signed_certificate(key, cert, uri, "127.0.0.1",
                                            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                                            {"commonName": "Gantry test server"})
    server = Server(user_manager=Users())
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/gantry/")
    server.set_server_name("Gantry test server")
    await server.set_application_uri(uri)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity,
                                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    await server.set_build_info("urn:gantry:test:product", "Gantry Interop", "Test Server",
                                "2.1.0", "42", datetime.datetime.now(datetime.timezone.utc))
    ns = await server.register_namespace("urn:gantry:test")
    mixer = await server.nodes.objects.add_object(ua.NodeId("Mixer", ns), ua.QualifiedName("Mixer", ns))
    nodes = {}

    async def var(parent, name, value, vtype):
        n = await parent.add_variable(ua.NodeId(f"Mixer.{name}", ns), ua.QualifiedName(name, ns),
                                      ua.Variant(value, vtype))
        nodes[name] = (n, vtype)
        return n

    await var(mixer, "Temperature", 21.5, ua.VariantType.Double)
    await var(mixer, "Count", 42, ua.VariantType.Int32)
    await var(mixer, "Running", True, ua.VariantType.Boolean)
    await var(mixer, "Recipe", "R-7", ua.VariantType.String)
    await var(mixer, "Mode", 1, ua.VariantType.Int32)
    counters = await mixer.add_folder(ua.NodeId("Mixer.Counters", ns), ua.QualifiedName("Counters", ns))
    await var(counters, "Good", 10, ua.VariantType.Int32)
    await var(counters, "Scrap", 2, ua.VariantType.Int32)
    await var(counters, "Extra", 1.0, ua.VariantType.Double)

    async def command(line: str) -> None:
        parts = line.split()
        try:
            if parts[0] == "set":
                node, vtype = nodes[parts[1]]
                raw = parts[2]
                value = {ua.VariantType.Double: float, ua.VariantType.Int32: int,
                         ua.VariantType.Boolean: lambda s: s == "true",
                         ua.VariantType.String: str}[vtype](raw)
                await node.write_value(ua.Variant(value, vtype))
            elif parts[0] == "add":
                await var(counters, parts[1], int(parts[2]), ua.VariantType.Int32)
            print(f"ok {line}", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"error {line}: {e}", flush=True)

    async with server:
        print(f"listening on {port}", flush=True)
        done = 0
        while True:
            await asyncio.sleep(0.1)
            lines = commands.read_text().splitlines() if commands.exists() else []
            for line in lines[done:]:
                await command(line)
            done = max(done, len(lines))



if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
