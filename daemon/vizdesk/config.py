"""Configuration: one YAML file, typed sections with defaults that fit the test bed.

Every key is documented in ``docs/configuration.md``. Secrets are never inline in the
YAML: they are read from ``*_file`` paths (or environment variables), so the file itself
can be world-readable and shared with compute nodes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENV_CONFIG = "VIZDESK_CONFIG"
REPO_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """Raised for a missing, malformed or inconsistent configuration."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    max_body_bytes: int = 65536
    max_header_bytes: int = 8190
    allowed_origins: list[str] = field(default_factory=list)
    trusted_proxies: list[str] = field(
        default_factory=list
    )  # IPs/CIDRs whose X-Forwarded-For counts
    cors_origins: list[str] = field(default_factory=list)


@dataclass
class LogConfig:
    level: str = "info"
    format: str = "auto"  # json | console | auto (console when stdout is a terminal)


@dataclass
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    username: str = ""
    password_file: str = ""
    key_prefix: str = "vizdesk:"
    node_url: str = ""  # how compute nodes reach Redis; defaults to url
    # let the daemon enable keyspace events (K$) so a registration wakes the tracker at once
    keyspace_notifications: bool = True
    # connections of the daemon's pool; a command waits this long for a free one
    max_connections: int = 100
    pool_timeout_seconds: float = 10.0
    # Redis Sentinel: "host:port" of each Sentinel ([] = connect to ``url`` directly);
    # the data db, user and password still come from url/username/password_file
    sentinel_hosts: list[str] = field(default_factory=list)
    sentinel_master: str = "vizdesk"
    sentinel_password_file: str = ""
    node_sentinel_hosts: list[str] = field(default_factory=list)  # as nodes reach them

    def password(self) -> str | None:
        env = os.environ.get("VIZDESK_REDIS_PASSWORD_DAEMON")
        if env:
            return env
        if self.password_file:
            return _read_secret(self.password_file, "redis.password_file")
        return None

    def sentinel_password(self) -> str | None:
        if self.sentinel_password_file:
            return _read_secret(self.sentinel_password_file, "redis.sentinel_password_file")
        return None

    def sentinels(self) -> list[tuple[str, int]]:
        """(host, port) of each Sentinel, checked."""
        return [host_port(h, "redis.sentinel_hosts") for h in self.sentinel_hosts]

    def node_sentinels(self) -> list[str]:
        for h in self.node_sentinel_hosts:
            host_port(h, "redis.node_sentinel_hosts")
        return self.node_sentinel_hosts or self.sentinel_hosts


@dataclass
class TrackerConfig:
    """The tracker runs on one replica at a time: the holder of a leader lease in Redis."""

    lease_seconds: float = 4.0  # a dead leader is replaced within this long
    replica_name: str = ""  # in /readyz and metrics; "" = <hostname>:<server.port>


@dataclass
class AuthConfig:
    algorithms: list[str] = field(default_factory=lambda: ["HS256"])
    hs256_secret_file: str = ""
    public_key_files: dict[str, str] = field(default_factory=dict)  # kid -> PEM path
    jwks_file: str = ""
    issuer: str = ""
    audience: str = ""
    leeway_seconds: int = 30
    username_claim: str = "sub"
    groups_claim: str = "groups"
    # Characters that split a single-string groups claim ("" = the string is one group;
    # a space in it splits on any whitespace), e.g. " " or ",".
    groups_claim_separator: str = ""
    min_uid: int = 1000
    denied_users: list[str] = field(
        default_factory=lambda: ["root", "slurm", "munge", "redis", "vizdesk", "nobody"]
    )
    admin_groups: list[str] = field(default_factory=lambda: ["vizdesk-admins"])
    dev_token_issuer: str = "vizdesk-dev"  # noqa: S105 - an issuer name, not a secret
    # Tokens whose exp is further than this from now are refused (0 = no bound); it also
    # bounds how long a revocation by jti alone must be remembered.
    max_token_lifetime_seconds: int = 24 * 3600
    require_jti: bool = False  # refuse tokens without jti (which cannot be revoked)

    def hs256_secret(self) -> str | None:
        env = os.environ.get("VIZDESK_JWT_SECRET")
        if env:
            return env
        if self.hs256_secret_file:
            return _read_secret(self.hs256_secret_file, "auth.hs256_secret_file")
        return None


@dataclass
class SlurmConfig:
    backend: str = "auto"  # auto | cli | pyslurm
    conf_path: str = ""  # slurm.conf of jobs, commands, pyslurm ("" = SLURM_CONF / default)
    submit_prefix: list[str] = field(default_factory=lambda: ["runuser", "-u", "{user}", "--"])
    sbatch: str = "sbatch"
    squeue: str = "squeue"
    # the CLI backend's tracker query: "text" (squeue --jobs=<tracked ids> --Format, cost
    # follows the tracked jobs) or "json" (squeue --json of every job, the old way)
    squeue_query: str = "text"
    scancel: str = "scancel"
    command_timeout_seconds: float = 15.0
    poll_interval_seconds: float = 1.0
    job_name_prefix: str = "vizdesk"
    default_partition: str = ""
    partitions: list[str] = field(default_factory=list)  # offered partitions ([] = any)
    extra_sbatch_args: list[str] = field(default_factory=list)
    scontrol: str = "scontrol"
    # extending a running desktop's time limit (scontrol update TimeLimit) needs the daemon
    # to be a Slurm operator (root, SlurmUser or AdminLevel=Operator): off by default
    allow_extend: bool = False


@dataclass
class SessionsConfig:
    jobscript: str = str(REPO_ROOT / "jobscripts" / "vnc.sbatch")
    output_dir: str = ""  # sbatch --output directory ("" = Slurm default, the job's cwd)
    workdir: str = "/tmp"
    default_cpus: int = 1
    default_memory_gb: int = 2
    default_gpus: int = 0
    default_time_limit_minutes: int = 60
    default_geometry: str = "1280x800"
    max_cpus: int = 64
    max_memory_gb: int = 1024
    max_gpus: int = 8
    max_time_limit_minutes: int = 7 * 24 * 60
    max_width: int = 7680
    max_height: int = 4320
    start_timeout_seconds: float = 300.0  # STARTING without registration → FAILED
    registration_ttl_seconds: int = 30
    ended_retention_seconds: int = 7 * 24 * 3600
    images: dict[str, str] = field(default_factory=dict)  # name -> .sif path (catalog seed)
    # minutes before the time limit at which the owner is warned (SSE walltime_warning)
    walltime_warn_minutes: list[float] = field(default_factory=lambda: [10.0, 2.0])
    thumbnail_interval_seconds: float = 10.0  # at most one framebuffer grab per desktop this often
    thumbnail_max_width: int = 320  # pixels
    thumbnail_timeout_seconds: float = 5.0


@dataclass
class TicketsConfig:
    ttl_seconds: int = 15


@dataclass
class NodeConfig:
    port_min: int = 5901
    port_max: int = 5999
    # where VNC servers listen: "" every interface, "hostname" the address the node's own
    # name resolves to (its cluster address), or a literal IP address
    vnc_listen: str = ""
    vnc_flavor: str = "auto"  # auto | turbovnc | tigervnc
    xvnc: str = "Xvnc"
    turbovnc_vncserver: str = "/opt/TurboVNC/bin/vncserver"
    desktop_command: list[str] = field(default_factory=lambda: ["startxfce4"])
    depth: int = 24
    startup_timeout_seconds: float = 30.0
    heartbeat_interval_seconds: float = 5.0
    vizdesk_command: str = ""  # absolute path of `vizdesk` on the nodes ("" = PATH)
    vglrun: str = "vglrun"
    vgl_device: str = "egl"
    # gpu: the desktop runs under vglrun when the job has a GPU; always: also without one
    # (Mesa software rendering: vgl_device egl, or the 3D X server below); never
    virtualgl: str = "gpu"  # gpu | always | never
    virtualgl_display: str = ""  # 3D X server for VirtualGL's GLX back end without a GPU
    virtualgl_xauthority: str = ""  # that X server's cookie file, added to the session's
    apptainer: str = "apptainer"
    apptainer_binds: list[str] = field(default_factory=list)
    # auto: extract the image (--unsquash) where the user may not use /dev/fuse
    apptainer_unsquash: str = "auto"  # auto | always | never
    # shows the daemon's warnings (idle, walltime) inside the desktop: argv, then the
    # summary and body are appended; runs in the desktop's X / D-Bus session (and image)
    notify_command: list[str] = field(default_factory=lambda: ["notify-send"])


@dataclass
class GroupPolicy:
    """What members of one group may ask for. "*" in a list means anything."""

    partitions: list[str] = field(default_factory=lambda: ["*"])
    images: list[str] = field(default_factory=lambda: ["*"])
    max_gpus: int = 0
    max_cpus: int = 8
    max_memory_gb: int = 32
    max_time_limit_minutes: int = 8 * 60
    max_sessions: int = 2
    max_jobs: int = 20
    # Batch jobs only:
    max_nodes: int = 1  # nodes one job may span
    max_tasks: int = 64  # tasks (MPI ranks) of one job
    accounts: list[str] = field(default_factory=list)  # Slurm accounts members may name ([] = none)
    qos: list[str] = field(default_factory=list)  # QOS names members may ask for ([] = none)
    gpu_types: list[str] = field(default_factory=lambda: ["*"])  # GPU types (gres gpu:<type>)
    # Desktops only: minutes one desktop's time limit may grow in total (0 = no extending;
    # needs slurm.allow_extend as well)
    max_extension_minutes: int = 0


@dataclass
class PolicyConfig:
    """Group policies; a user gets the most permissive of their groups' entries.

    The group "*" applies to every authenticated user.
    """

    groups: dict[str, GroupPolicy] = field(default_factory=lambda: {"*": GroupPolicy()})


@dataclass
class LimitsConfig:
    create_per_window: int = 10  # session/job creations per user per window
    window_seconds: int = 60
    max_websockets_per_session: int = 4
    ws_idle_timeout_seconds: int = 3600
    ws_max_message_bytes: int = 4 * 1024 * 1024
    ws_handshake_timeout_seconds: int = 15
    ws_slow_client_timeout_seconds: int = 30  # a browser that takes longer to accept data is cut
    max_event_streams_per_user: int = 8  # open SSE streams per user, all replicas (0 = no cap)
    max_connections_per_client: int = 256  # requests in progress per client address (0 = no cap)


@dataclass
class SharingConfig:
    """Share links to a desktop (``POST /api/v1/sessions/{id}/shares``), enforced by the proxy."""

    enabled: bool = True
    allow_control: bool = True  # False: only view-only links
    max_expiry_minutes: float = 480.0
    groups: list[str] = field(default_factory=lambda: ["*"])  # who may create links ("*" = all)
    control_groups: list[str] = field(default_factory=lambda: ["*"])  # ... control links
    max_links_per_session: int = 20
    check_interval_seconds: float = 1.0  # how often open shared connections re-check their link


@dataclass
class IdlePartition:
    """Idle reclaim of one partition's desktops (minutes may be fractions; 0 = off)."""

    warn_minutes: float = 0.0
    end_minutes: float = 0.0


@dataclass
class IdleConfig:
    """Idle reclaim from the input the proxy sees: per partition ("*" = any other)."""

    partitions: dict[str, IdlePartition] = field(default_factory=dict)
    write_interval_seconds: float = 5.0  # at most one activity write per desktop this often


@dataclass
class JobsConfig:
    """Batch jobs (``POST /api/v1/jobs``): templates, outputs and size limits."""

    templates_dir: str = str(REPO_ROOT / "templates")  # *.yaml job templates
    output_dir: str = ""  # sbatch --output directory ("" = the user's home; "{user}" expands)
    script_dir: str = ""  # where the fixed batch script is written ("" = /tmp/vizdesk-<uid>-jobs)
    allow_host_commands: bool = False  # ad-hoc jobs without an image (templates always may)
    max_command_args: int = 256
    max_command_bytes: int = 65536  # all argv elements together
    max_param_bytes: int = 65536  # all parameter values together
    max_string_length: int = 4096  # string parameters without their own max_length
    max_output_bytes: int = 1048576  # largest tail served by GET /api/v1/jobs/{id}/output
    ended_retention_seconds: int = 7 * 24 * 3600
    # Each job runs in its own directory <workdir_root>/<id> (mode 0700, the user's own),
    # where its input files land and its results stay. {home} and {user} expand.
    workdir_root: str = "{home}/vizdesk-jobs"
    user_templates: bool = True  # users may keep their own templates (stored in Redis)
    max_user_templates: int = 50  # per user
    max_template_versions: int = 20  # versions kept per user template (oldest dropped)
    max_config_file_bytes: int = 1048576  # largest config file (format json|yaml) validated
    max_nodes: int = 64  # hard upper bound of a template's resources.nodes
    max_ntasks: int = 4096  # hard upper bound of resources.ntasks and ntasks_per_node


@dataclass
class UploadsConfig:
    """Resumable uploads (tus 1.0 at ``/api/v1/uploads``): where files are staged, how big
    they may be and how long an unfinished or unused upload lives. Every file operation
    runs in the user-file helper AS THE USER (``slurm.submit_prefix``), never as the
    daemon's own identity."""

    dir: str = "{home}/vizdesk-jobs/.uploads"  # staging directory; {home} and {user} expand
    max_file_bytes: int = 10 * 1024**3  # largest single upload (413 beyond)
    quota_bytes: int = 100 * 1024**3  # all of a user's live uploads together (413 beyond)
    max_uploads_per_user: int = 200  # live upload sessions per user
    expire_hours: float = 24.0  # an upload not used by a job is removed after this long
    cleanup_interval_seconds: float = 300.0  # how often expired uploads are swept
    progress_interval_seconds: float = 1.0  # at most one `upload` event per upload this often
    # the helper's command ([] = a Python all users can run, -I, this package's helper.py)
    helper_command: list[str] = field(default_factory=list)
    helper_timeout_seconds: float = 60.0  # a helper call that moves no data


@dataclass
class ImagesConfig:
    """Apptainer image catalog (``vizdesk.images.catalog``): where ``.sif`` files are found."""

    dirs: list[str] = field(default_factory=list)  # directories scanned for *.sif (not recursive)
    cache_ttl_seconds: int = 300  # an entry is re-inspected at the latest after this long
    apptainer: str = "apptainer"  # command that runs `apptainer inspect`
    inspect_timeout_seconds: float = 30.0


@dataclass
class MetricsConfig:
    """Who may read ``GET /metrics`` (Prometheus): a listener of its own, a token, an
    allow-list of client addresses; any combination."""

    listen: str = ""  # "host:port" of a listener serving /metrics only ("" = the main port)
    token_file: str = ""  # file holding the Bearer token a scraper must send ("" = none)
    allow: list[str] = field(default_factory=list)  # client IPs/CIDRs allowed ([] = any)

    def token(self) -> str | None:
        if not self.token_file:
            return None
        token = _read_secret(self.token_file, "metrics.token_file")
        if not token:
            raise ConfigError(f"metrics.token_file: {self.token_file} is empty")
        return token

    def listen_address(self) -> tuple[str, int] | None:
        """(host, port) of ``listen``, or None when /metrics is on the main port."""
        if not self.listen:
            return None
        return host_port(self.listen, "metrics.listen")


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    tickets: TicketsConfig = field(default_factory=TicketsConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    uploads: UploadsConfig = field(default_factory=UploadsConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    sharing: SharingConfig = field(default_factory=SharingConfig)
    idle: IdleConfig = field(default_factory=IdleConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    path: str = ""  # where it was loaded from (not a YAML key)

    def validate(self) -> None:
        n = self.node
        if not (1024 <= n.port_min <= n.port_max <= 65535):
            raise ConfigError("node.port_min/port_max: need 1024 <= port_min <= port_max <= 65535")
        allowed = {"HS256", "RS256", "ES256"}
        bad = [a for a in self.auth.algorithms if a not in allowed]
        if bad or not self.auth.algorithms:
            raise ConfigError(f"auth.algorithms: only {sorted(allowed)} are allowed, got {bad}")
        if self.slurm.backend not in {"auto", "cli", "pyslurm"}:
            raise ConfigError("slurm.backend: one of auto, cli, pyslurm")
        if self.slurm.squeue_query not in {"text", "json"}:
            raise ConfigError("slurm.squeue_query: one of text, json")
        if self.slurm.conf_path and not os.path.isabs(self.slurm.conf_path):
            raise ConfigError("slurm.conf_path: an absolute path (or empty)")
        if n.vnc_flavor not in {"auto", "turbovnc", "tigervnc"}:
            raise ConfigError("node.vnc_flavor: one of auto, turbovnc, tigervnc")
        if n.virtualgl not in {"gpu", "always", "never"}:
            raise ConfigError("node.virtualgl: one of gpu, always, never")
        display_re = r"[A-Za-z0-9.\-]*:\d+(\.\d+)?"
        if n.virtualgl_display and not re.fullmatch(display_re, n.virtualgl_display):
            raise ConfigError("node.virtualgl_display: an X display such as :93 (or empty)")
        if n.virtualgl_xauthority and not os.path.isabs(n.virtualgl_xauthority):
            raise ConfigError("node.virtualgl_xauthority: an absolute path (or empty)")
        if n.apptainer_unsquash not in {"auto", "always", "never"}:
            raise ConfigError("node.apptainer_unsquash: one of auto, always, never")
        if self.log.format not in {"auto", "json", "console"}:
            raise ConfigError("log.format: one of auto, json, console")
        if not any("{user}" in part for part in self.slurm.submit_prefix):
            raise ConfigError("slurm.submit_prefix must contain '{user}' (jobs run as the user)")
        for net in self.server.trusted_proxies:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ConfigError(f"server.trusted_proxies: {net!r} is not an IP or CIDR") from exc
        for net in self.metrics.allow:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ConfigError(f"metrics.allow: {net!r} is not an IP or CIDR") from exc
        self.redis.sentinels()
        self.redis.node_sentinels()
        if self.redis.sentinel_hosts and not self.redis.sentinel_master:
            raise ConfigError("redis.sentinel_master: needed with redis.sentinel_hosts")
        if not 1.0 <= self.tracker.lease_seconds <= 60.0:
            raise ConfigError("tracker.lease_seconds: between 1 and 60")
        listen = self.metrics.listen_address()
        if listen is not None and listen == (self.server.host, self.server.port):
            raise ConfigError("metrics.listen: must differ from server.host:server.port")
        if self.images.cache_ttl_seconds <= 0 or self.images.inspect_timeout_seconds <= 0:
            raise ConfigError("images.cache_ttl_seconds/inspect_timeout_seconds: must be > 0")
        for name, idle in self.idle.partitions.items():
            if idle.end_minutes and idle.warn_minutes >= idle.end_minutes:
                raise ConfigError(f"idle.partitions.{name}: warn_minutes must be < end_minutes")
        if self.sharing.max_expiry_minutes <= 0:
            raise ConfigError("sharing.max_expiry_minutes: must be > 0")
        if self.tickets.ttl_seconds <= 0 or self.tickets.ttl_seconds > 30:
            raise ConfigError("tickets.ttl_seconds: between 1 and 30")

    @property
    def node_redis_url(self) -> str:
        return self.redis.node_url or self.redis.url

    @property
    def replica_name(self) -> str:
        return self.tracker.replica_name or f"{socket.gethostname()}:{self.server.port}"


def host_port(text: str, key: str) -> tuple[str, int]:
    """``"h:6379"``/``"[::1]:6379"`` → (host, port); ConfigError naming ``key`` if not."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise ConfigError(f"{key}: {text!r} is not host:port")
    if not 1 <= int(port) <= 65535:
        raise ConfigError(f"{key}: port {port} outside 1-65535")
    return host, int(port)


def _read_secret(path: str, key: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from exc


def _build(cls: type[Any], data: Any, where: str, strict: bool = True) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "path"}
    unknown = set(data) - known
    if unknown and strict:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in unknown:
            continue  # lenient: a newer head node's key this (older) node does not know
        key = f"{where}.{name}" if where else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(typing.cast(type[Any], hint), value, key, strict)
        else:
            kwargs[name] = _coerce(hint, value, key, strict)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str, strict: bool = True) -> Any:
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list")
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping")
        _, vt = typing.get_args(hint)
        if dataclasses.is_dataclass(vt):
            return {
                str(k): _build(typing.cast(type[Any], vt), v, f"{key}.{k}", strict)
                for k, v in value.items()
            }
        return {str(k): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false")
        return value
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string")
        return str(value)
    return value


def load_config(path: str | None = None, *, strict: bool = True) -> Config:
    """Load and validate the config from ``path``, ``$VIZDESK_CONFIG`` or defaults.

    ``strict=False`` (the compute-node wrapper) ignores unknown keys, so a head node
    upgraded first, with a config using new keys, does not break older nodes' jobs.
    """
    path = path or os.environ.get(ENV_CONFIG)
    data: Any = {}
    if path:
        try:
            with open(path) as fh:
                data = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    cfg: Config = _build(Config, data, "", strict)
    cfg.path = str(Path(path).resolve()) if path else ""
    cfg.validate()
    return cfg
