"""The echo target every benchmark pod runs: each response names the pod and the connection that answered.

Runs as ``python -m workloads.echo`` (a plain process in the netns cluster, a container in kind) and imports
nothing else from this repository. The header, JSON and metrics contract is in ``workloads/echo/README.md``;
``workloads.echo.process.EchoProcess`` starts one as a child process for tests and launchers.

    $ POD_NAME=echo-0 python -m workloads.echo --port 0 --admin-port 0
    echo: listening on 0.0.0.0:41263 admin 0.0.0.0:39811
"""
