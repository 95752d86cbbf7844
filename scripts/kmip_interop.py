"""PyKMIP's ProxyKmipClient against a running KMA (issue 19, SPEC U5).

Run by scripts/kmip-interop.sh, which starts the cluster, enrolls the clients and installs
PyKMIP 0.11.0 in a virtual environment. One line per KMIP version:
"PASS KMIP <version>: ..." when every step went as the cluster's rules say; otherwise the
step that did not, and the exit code 1.

Usage: kmip_interop.py HOST PORT CA LIBRARY_CERT LIBRARY_KEY STRANGER_CERT STRANGER_KEY DRIVE_KEY_ID
"""

import os
import sys

from kmip.core import enums
from kmip.pie import exceptions, objects
from kmip.pie.client import ProxyKmipClient

VERSIONS = {
    "1.2": enums.KMIPVersion.KMIP_1_2,
    "1.4": enums.KMIPVersion.KMIP_1_4,
    "2.0": enums.KMIPVersion.KMIP_2_0,
}


def client(args, version, cert, key):
    host, port, ca = args[0], int(args[1]), args[2]
    # PROTOCOL_TLS, not PROTOCOL_TLS_CLIENT: PyKMIP gives no server name, which the latter
    # requires (shared notes, kmip-facts.md).
    return ProxyKmipClient(hostname=host, port=port, cert=cert, key=key, ca=ca,
                           ssl_version="PROTOCOL_TLS", kmip_version=version,
                           config_file=os.devnull)


def refused(step, call):
    try:
        call()
    except exceptions.KmipOperationFailure as error:
        return str(error)
    raise AssertionError(step + ": the cluster should have refused it")


def scenario(args, label, version):
    library = client(args, version, args[3], args[4])
    stranger = client(args, version, args[5], args[6])
    name = "TAPE-" + label.replace(".", "")
    steps = []
    with library:
        uid = library.create(enums.CryptographicAlgorithm.AES, 256, name=name,
                             cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                                       enums.CryptographicUsageMask.DECRYPT])
        steps.append("create")
        key = library.get(uid)
        assert len(key.value) == 32, "get: a 32-byte AES key"
        steps.append("get")
        attributes = library.get_attributes(uid)
        names = [a.attribute_name.value for a in attributes[1]]
        assert "State" in names and "Cryptographic Length" in names, names
        steps.append("get attributes")
        name_attribute = library.attribute_factory.create_attribute(enums.AttributeType.NAME, name)
        assert uid in library.locate(attributes=[name_attribute]), "locate by name"
        steps.append("locate by name")
        library.activate(uid)
        steps.append("activate")
        refused("destroy of an active key", lambda: library.destroy(uid))
        steps.append("destroy of an active key refused")
        library.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
        steps.append("revoke")
        library.destroy(uid)
        steps.append("destroy")
        refused("get after destroy", lambda: library.get(uid))
        steps.append("get after destroy refused")
        value = os.urandom(32)
        registered = library.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256, value))
        assert library.get(registered).value == value, "register: the value comes back"
        steps.append("register")
        refused("unknown ID", lambda: library.get("00" * 30))
        steps.append("unknown ID refused")
        drive_key = library.get(args[7])
        assert len(drive_key.value) == 32, "a drive's key through KMIP"
        steps.append("a drive's key read")
    with stranger:
        refused("a client outside the key group", lambda: stranger.get(registered))
        steps.append("outside its key group refused")
    return steps


def main(args):
    passed = failed = 0
    for label, version in VERSIONS.items():
        try:
            steps = scenario(args, label, version)
            print("PASS KMIP %s: %s" % (label, ", ".join(steps)), flush=True)
            passed += 1
        except Exception as error:  # any failure is this version's, reported and counted
            print("FAIL KMIP %s: %s: %s" % (label, type(error).__name__, error), flush=True)
            failed += 1
    print("kmip-interop: %d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
