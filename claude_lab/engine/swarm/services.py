"""A `ContainerSpec` as a Swarm service: the task template, published ports and where it must run."""
from __future__ import annotations

from docker.types import (ContainerSpec as SvcContainerSpec, EndpointSpec, Healthcheck, Mount,
                          NetworkAttachmentConfig, Placement, Resources, RestartPolicy, TaskTemplate)

from ...naming import LAB
from ..types import ContainerSpec, memory_bytes

STOP_GRACE_NS = 5_000_000_000


def service_template(spec: ContainerSpec, image: str, manager_node: str,
                     volume_labels: dict[str, dict[str, str]],
                     constraints: list[str] = ()) -> tuple[TaskTemplate, EndpointSpec | None, bool]:  # type: ignore[assignment]
    """(task template, endpoint spec, pinned to the manager): a spec that binds a folder of this machine or
    publishes ports runs on the manager's node; the others go where Swarm's scheduler puts them, among the
    nodes that meet the lab's `constraints`."""
    mounts = []
    pin_here = bool(spec.ports)  # published dev ports are this machine's (the manager's) ports
    for source, v in spec.volumes.items():
        if source.startswith("/"):
            mounts.append(Mount(v["bind"], source, type="bind", read_only=v.get("mode") == "ro"))
            pin_here = True  # a folder of this machine
        else:
            mounts.append(Mount(v["bind"], source, type="volume", read_only=v.get("mode") == "ro",
                                labels=volume_labels.get(source) or {LAB: spec.labels.get(LAB, "")}))
    for target, opts in (spec.tmpfs or {}).items():
        size = next((o.split("=", 1)[1] for o in opts.split(",") if o.startswith("size=")), None)
        mounts.append(Mount(target, None, type="tmpfs", tmpfs_size=memory_bytes(size) if size else None))
    healthcheck = Healthcheck(**spec.healthcheck) if spec.healthcheck else None
    cspec = SvcContainerSpec(
        image=image, command=spec.command, hostname=spec.hostname, env=spec.environment or None,
        workdir=spec.working_dir, user=spec.user, labels=spec.labels, mounts=mounts or None,
        stop_grace_period=STOP_GRACE_NS, read_only=spec.read_only or None, init=spec.init or None,
        cap_add=spec.cap_add, cap_drop=spec.cap_drop, healthcheck=healthcheck,
    )
    mem = memory_bytes(spec.mem_limit)
    resources = Resources(cpu_limit=spec.nano_cpus, mem_limit=mem,
                          cpu_reservation=spec.nano_cpus // 4 if spec.nano_cpus else None,
                          mem_reservation=mem // 4 if mem else None)
    if spec.pids_limit:
        resources.setdefault("Limits", {})["Pids"] = spec.pids_limit  # API 1.41 (Engine 20.10)
    placed = [*constraints, f"node.id=={manager_node}"] if pin_here else list(constraints)
    placement = Placement(constraints=placed) if placed else None
    networks = [NetworkAttachmentConfig(spec.network, aliases=spec.aliases or None)]
    networks += [NetworkAttachmentConfig(net, aliases=al or None) for net, al in spec.extra_networks.items()]
    template = TaskTemplate(cspec, resources=resources, placement=placement, networks=networks,
                            restart_policy=RestartPolicy(condition="any", delay=1_000_000_000))
    endpoint = None
    if spec.ports:
        endpoint = EndpointSpec(ports={port: (int(cport.split("/")[0]), cport.split("/")[1] if "/" in cport
                                              else "tcp", "host") for cport, (_ip, port) in spec.ports.items()})
    return template, endpoint, pin_here
