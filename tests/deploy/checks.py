"""Every check over rendered objects, in one list: the overlays must pass all of them."""
from __future__ import annotations

from serving.tfs_config import ConfigError
from tests.deploy import custom_resources, loadtest, policy, workloads
from tests.deploy.manifests import Obj

CHECKS = policy.CHECKS + custom_resources.CHECKS + workloads.CHECKS + loadtest.CHECKS


def problems(objects: list[Obj]) -> list[str]:
    """What every check finds; a command line or config file the server would refuse is one."""
    found = []
    for check in CHECKS:
        try:
            found += check(objects)
        except ConfigError as error:
            found.append(f"{check.__name__}: {error}")
    return found
