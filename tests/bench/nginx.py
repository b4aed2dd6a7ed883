"""Row (b): nginx with one worker in front of the direct upstream, a keepalive pool
to it, no access log, in the foreground with its own prefix (nothing under /etc)."""

from __future__ import annotations

from pathlib import Path

_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_config(prefix: Path, port: int, upstream_port: int) -> str:
    temp = "\n".join(f"    {name}_temp_path {prefix / name};" for name in _TEMP_DIRS)
    # keepalive_requests is raised on both sides: the upstream (uvicorn) and wrk keep
    # connections open forever, so nginx's default of 1000 would make it the odd one out.
    return f"""\
daemon off;
master_process on;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
{temp}
    keepalive_requests 1000000;

    upstream demo {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
        keepalive_requests 1000000;
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://demo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def nginx_command(nginx: str, prefix: Path, port: int, upstream_port: int) -> list[str]:
    """Write the config under `prefix` and return the command line that runs it."""
    prefix.mkdir(parents=True, exist_ok=True)
    for name in _TEMP_DIRS:
        (prefix / name).mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, port, upstream_port))
    # -e: the error log used before the config is read (Debian's default is stderr).
    return [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
