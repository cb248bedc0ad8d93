"""`invoke status`: ask every host at once (one SSH round trip each), judge the answers.

The hub answers for the swarm, the hub stack and the users' servers; the users' last
activity comes from the hub's REST API, asked on the hub with the culler's token (which
never leaves the hub: see `commands.hub_api_command`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from swarmhub.names import unescape_user
from swarmhub.observe import commands, parse, report
from swarmhub.observe.remote import Reach, in_parallel, reach
from swarmhub.runbook.host import Host
from swarmhub.settings import Settings, check_local_files
from swarmhub.steps import images
from swarmhub.steps.hub import CONTAINERS

PROBE_TIMEOUT = 30  # seconds for one host's probes
MAX_USER_PAGES = 50  # 10,000 users: far beyond any course, a stop for a misbehaving API


@dataclass
class HostAnswer:
    """What one host said: its sections, or why it could not be asked."""

    sections: dict[str, str] = field(default_factory=dict)
    error: str = ""


def ask(host: Host, settings: Settings) -> HostAnswer:
    """Run a host's probes (read-only) and split their output."""
    script = commands.sectioned(commands.host_probe_sections(settings, host.roles))
    try:
        result = host.run(script, check=False, timeout=PROBE_TIMEOUT)
    except Exception as error:  # the connection dropped, or the probes hung
        return HostAnswer(error=f"probes failed: {parse.first_line(str(error) or repr(error))}")
    return HostAnswer(parse.split_sections(result.stdout))


def more_users(host: Host, settings: Settings, offset: int) -> list[parse.UserServer]:
    """The pages after the first one, for courses with more active users than a page holds."""
    servers: list[parse.UserServer] = []
    for _ in range(MAX_USER_PAGES):
        output = host.run(commands.users_command(settings, offset), check=False).stdout
        body, code = parse.split_http_code(output)
        if code != 200:
            raise parse.ParseError(f"hub API users page at {offset}: HTTP {code}")
        page, following = parse.parse_users_page(body)
        servers += page
        if following is None:
            break
        offset = following
    return servers


def collect(settings: Settings, reached: Reach) -> report.Report:
    """The report of a cluster from the hosts reached (those not reached are failing rows)."""
    answers = in_parallel(reached.hosts, lambda name: ask(reached.hosts[name], settings))
    for name, error in reached.errors.items():
        answers[name] = HostAnswer(error=error)
    hosts = report.hosts_section()
    for name, roles in settings.hosts.items():
        hosts.rows.append(host_row(name, roles, answers[name]))
    hub_name, proxy_name = settings.hub_host, settings.proxy_host
    oom = oom_kills(settings, answers)
    swarm, stack, servers = hub_sections(
        settings, answers[hub_name], reached.hosts.get(hub_name), oom
    )
    proxy = proxy_section(proxy_name, answers[proxy_name])
    offered = offered_images(settings)
    images = report.images_section()
    held = {
        node: None
        if answers[node].error or "images" not in answers[node].sections
        else set(answers[node].sections["images"].split())
        for node in settings.node_hosts
    }
    images.rows += report.image_rows(offered, held, settings.node_hosts)
    if not answers[hub_name].error:
        report.flag_image_servers(
            servers.rows,
            parse.parse_service_images(answers[hub_name].sections.get("service_images", "")),
            set(offered),
        )
    return report.Report(
        str(settings.source), datetime.now(UTC), [hosts, swarm, stack, proxy, images, servers]
    )


def offered_images(settings: Settings) -> dict[str, list[str]]:
    """Each image the hub offers now and the profiles that start on it (the user image first,
    the base of every course layer, with no profile of its own when every profile has one)."""
    offered: dict[str, list[str]] = {ref: [] for ref in images.offered_refs(settings)}
    for profile in settings.profile_set().profiles:
        offered[images.profile_ref(settings, profile)].append(profile.name)
    return offered


def host_row(name: str, roles: tuple[str, ...], answer: HostAnswer) -> report.Row:
    if answer.error:
        return report.host_row(name, roles, unreachable=answer.error)
    found = answer.sections
    errors = []
    disk = memory = None
    try:
        disk = parse.parse_df(found.get("disk", ""))
    except parse.ParseError as error:
        errors.append(str(error))
    try:
        memory = parse.parse_meminfo(found.get("memory", ""))
    except parse.ParseError as error:
        errors.append(str(error))
    docker = (found["docker"].strip() or "unknown") if "docker" in found else None
    return report.host_row(name, roles, disk=disk, memory=memory, docker=docker, errors=errors)


def oom_kills(settings: Settings, answers: dict[str, HostAnswer]) -> dict[str, parse.OomKills]:
    """The OOM kills in users' servers that the nodes' engines saw (unreadable ones skipped:
    a node's own row says why)."""
    found = []
    for name in settings.node_hosts:
        try:
            found.append(parse.parse_oom_events(answers[name].sections.get("oom", "")))
        except parse.ParseError:
            continue
    return parse.merge_oom_kills(*found)


def hub_sections(
    settings: Settings,
    answer: HostAnswer,
    hub: Host | None,
    oom: dict[str, parse.OomKills] | None = None,
) -> tuple[report.Section, report.Section, report.Section]:
    """The swarm, the hub stack and the users' servers, all as the hub sees them."""
    swarm, stack, servers = (
        report.swarm_section(),
        report.stack_section(),
        report.servers_section(),
    )
    name = settings.hub_host
    if answer.error:
        why = f"unknown: hub {name} unreachable"
        swarm.rows.append(report.unknown_row("swarm", why))
        stack.rows.append(report.unknown_row("hub stack", why))
        servers.rows.append(report.unknown_row("user servers", why))
        return swarm, stack, servers
    found = answer.sections
    now = _clock(found)

    tasks: dict[str, parse.ServiceTask] = {}
    try:
        tasks = parse.parse_service_tasks(found.get("tasks", ""))
    except parse.ParseError as error:
        servers.rows.append(report.unknown_row("swarm services", str(error)))
    try:
        nodes = parse.parse_node_ls(found.get("nodes", ""))
        swarm.rows += report.swarm_rows(nodes, name, settings.node_hosts, tasks)
    except parse.ParseError as error:
        swarm.rows.append(report.unknown_row("swarm", str(error)))

    try:
        containers = parse.parse_containers(found.get("containers", ""), CONTAINERS)
        stack.rows += [report.container_row(c, now) for c in containers]
    except parse.ParseError as error:
        stack.rows.append(report.unknown_row("containers", str(error)))
    stack.rows.append(
        report.unit_row(commands.REGISTRY_UNIT, found.get("registry", "").strip() or "unknown")
    )
    body, code = parse.split_http_code(found.get("hub_api", ""))
    version = parse.parse_hub_version(body) if code == 200 else ""
    stack.rows.append(report.hub_api_row(code, "" if code else parse.first_line(body), version))
    stack.rows.append(report.backup_row(found.get("backups", "")))
    if warmup := report.warmup_row(found.get("warmup", "").strip(), now):
        stack.rows.append(warmup)

    body, code = parse.split_http_code(found.get("users", ""))
    try:
        if code != 200:
            raise parse.ParseError(
                f"hub API users: {f'HTTP {code}' if code else parse.first_line(body)}"
            )
        users, following = parse.parse_users_page(body)
        if following is not None and hub is not None:
            users += more_users(hub, settings, following)
        rows = report.server_rows(users, tasks, now, commands.user_service, _user_of_service, oom)
        report.flag_old_servers(
            rows,
            parse.parse_service_images(found.get("service_images", "")),
            parse.parse_upgrade(found.get("upgrade", "")),
        )
        servers.rows += rows
    except parse.ParseError as error:
        servers.rows.append(report.unknown_row("user servers", str(error)))
    return swarm, stack, servers


def proxy_section(name: str, answer: HostAnswer) -> report.Section:
    section = report.proxy_section()
    if answer.error:
        section.rows.append(report.unknown_row(name, f"unknown: proxy {name} unreachable"))
        return section
    found = answer.sections
    expires, cert_error = None, ""
    try:
        expires = parse.parse_cert_enddate(found.get("cert", ""))
    except parse.ParseError as error:
        cert_error = str(error)
    nginx = found.get("nginx", "").strip() or "unknown"
    section.rows.append(report.proxy_row(name, nginx, expires, _clock(found), cert_error))
    return section


def _clock(found: dict[str, str]) -> datetime:
    """The host's own clock (ages and uptimes against the clock that wrote the times)."""
    try:
        return parse.parse_epoch(found.get("now", ""))
    except parse.ParseError:
        return datetime.now(UTC)


def _user_of_service(service: str) -> str:
    return unescape_user(service.removeprefix(commands.USER_SERVICE_PREFIX))


def gather(settings: Settings) -> report.Report:
    """Reach every host of the env file and report on the cluster."""
    check_local_files(settings)
    reached = reach(settings, settings.hosts)
    try:
        return collect(settings, reached)
    finally:
        reached.close()
