"""`ray up` of docs/cluster-onprem.yaml for real on this machine: a head on 127.0.0.1 and a worker on 127.0.0.2,
reached over SSH through an sshd that listens on loopback only; then `ray exec` of a quick sweep, `ray rsync-down`
of its results folder, and `ray down`.

The cluster runs as a user of its own, created here and removed after: `ray down` runs `ray stop`, which stops every
Ray process its user may signal, so as that user it reaches the cluster's processes and nothing else (not the test
session's Ray, not another sweep's). Needs root, sshd and rsync (CI installs openssh-server and rsync); skips, saying
why, without them."""

import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.clusters import free_port, stop_pids

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(sysconfig.get_paths()["purelib"])  # this environment's packages, which the cluster's user borrows
SSHD = "/usr/sbin/sshd"
# A Python of this version that another user can run (this environment's own may live in root's home)
PYTHON = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/local/bin:/usr/bin:/bin")
TOOLS = {SSHD: "openssh-server", "ssh": "openssh-client", "ssh-keygen": "openssh-client", "rsync": "rsync"}


def readable_by_all(path: Path) -> bool:
    """That another user can read ``path``: every folder above it searchable, the path itself readable."""
    return all(os.stat(p).st_mode & 0o001 for p in path.parents) and bool(os.stat(path).st_mode & 0o004)


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root, to create the cluster's own user and run sshd"
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)})
    if missing:
        return f"needs {', '.join(missing)} (apt-get install {' '.join(missing)})"
    system = subprocess.run(
        ["python3", "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
    )
    if system.stdout.strip() != str(sys.version_info[:2]):
        return f"the system's python3 is {system.stdout.strip()}, not this environment's {sys.version_info[:2]}"
    unreadable = [str(p) for p in (ROOT, SITE) if not readable_by_all(p)]
    if unreadable:
        return f"another user cannot read {', '.join(unreadable)}"
    return None


def pids_of(uid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").glob("[0-9]*") if _owner(p) == uid]


def _owner(proc: Path) -> int | None:
    try:
        return proc.stat().st_uid
    except OSError:
        return None


def _name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def node_environment(home: Path) -> None:
    """What the on-prem file's setup expects of a machine that has been set up once: ~/cnn-venv with `ray` and
    `sweep` in it (so the setup skips pip, which has no network here). It is a venv of the system's python3 that
    borrows this environment's packages; the project itself is imported from ~/cnn-sweeps, where `ray up` syncs it."""
    venv = home / "cnn-venv"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", venv], check=True)
    (site,) = venv.glob("lib/python3*/site-packages")
    (site / "borrowed.pth").write_text(f"{home / 'cnn-sweeps'}\n{SITE}\n")
    for script in ("ray", "sweep"):
        body = (Path(sys.executable).parent / script).read_text().split("\n", 1)[1]
        (venv / "bin" / script).write_text(f"#!{venv}/bin/python\n{body}")
        (venv / "bin" / script).chmod(0o755)


def test_ray_up_exec_rsync_down_down(data_dir, capsys):
    reason = why_not()
    if reason:
        pytest.skip(reason)
    user = f"rayup{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="ru", dir="/tmp"))  # root's: sshd's host key and config
    times, sshd, uid = {}, None, None

    def step(name, *cmd, timeout=120):
        start = time.monotonic()
        done = subprocess.run(
            ["runuser", "-u", user, "--", "env", "-i", *env, *map(str, cmd)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        times[name] = time.monotonic() - start
        assert done.returncode == 0, f"{name}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    try:
        start = time.monotonic()
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", user], check=True)
        subprocess.run(["usermod", "-p", "*", user], check=True)  # no password, yet not locked: sshd refuses those
        uid, home = pwd.getpwnam(user).pw_uid, Path(pwd.getpwnam(user).pw_dir)
        ssh_port, gcs_port = free_port(), free_port()

        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", work / "host_key"], check=True)
        (work / "sshd_config").write_text(
            f"Port {ssh_port}\nListenAddress 127.0.0.1\nListenAddress 127.0.0.2\nHostKey {work / 'host_key'}\n"
            f"PidFile {work / 'sshd.pid'}\nAllowUsers {user}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin no\nUsePAM no\nX11Forwarding no\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", work / "sshd_config"], stderr=subprocess.DEVNULL)

        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", ssh / "id_ed25519"], check=True)
        (ssh / "authorized_keys").write_text((ssh / "id_ed25519.pub").read_text())
        # `ray up` has no ssh_port; the user's ssh config sends both nodes to sshd's port, for the launcher and
        # for the head's autoscaler alike (ssh_proxy_command would not reach the head: `ray up` drops it there).
        (ssh / "config").write_text(f"Host 127.0.0.1 127.0.0.2\n  Port {ssh_port}\n")
        node_environment(home)
        shutil.copytree(data_dir / "MNIST", home / "data" / "MNIST")
        (home / ".ray").mkdir()
        (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))  # what `ray get-auth-token --generate` does
        cluster_tmp = work.with_name(work.name + "c")  # the nodes' RAY_TMPDIR; the launcher gets another (below)
        with (home / ".bashrc").open("a") as bashrc:  # every shell of the nodes: `ray up`'s commands, `ray exec`
            bashrc.write(
                f"export RAY_TMPDIR={cluster_tmp} RAY_ADDRESS=127.0.0.1:{gcs_port} RAY_USAGE_STATS_ENABLED=0\n"
            )

        # The on-prem file, with this machine's addresses, user, key and free ports. The head holds no trial
        # (--num-cpus=0) so that the rows can only come from the worker, once the sweep has waited for it.
        config = yaml.safe_load((ROOT / "docs" / "cluster-onprem.yaml").read_text())
        config["provider"].update(head_ip="127.0.0.1", worker_ips=["127.0.0.2"])
        config["auth"] = {"ssh_user": user, "ssh_private_key": str(ssh / "id_ed25519")}
        head, worker = config["head_start_ray_commands"][-1], config["worker_start_ray_commands"][-1]
        config["head_start_ray_commands"][-1] = head.replace("6379", str(gcs_port)) + (
            f" --num-cpus=0 --dashboard-port={free_port()} --dashboard-agent-listen-port={free_port()}"
        )
        # Without the worker's `ray stop`: on one machine, as one user, it would stop the head too.
        config["worker_start_ray_commands"] = [
            worker.replace("6379", str(gcs_port))
            + f" --num-cpus=2 --node-ip-address=127.0.0.2 --dashboard-agent-listen-port={free_port()}"
        ]
        cluster = home / "cluster.yaml"
        cluster.write_text(yaml.safe_dump(config))
        subprocess.run(["chown", "-R", f"{user}:{user}", home], check=True)
        times["user, sshd, keys, node environment"] = time.monotonic() - start

        env = [
            f"HOME={home}",
            f"USER={user}",
            f"LOGNAME={user}",
            f"PATH={home}/cnn-venv/bin:/usr/bin:/bin",
            # the launcher's own RAY_TMPDIR: with the head's, both use one cluster state file and `ray down` hangs
            f"RAY_TMPDIR={work.with_name(work.name + 'l')}",
            "RAY_USAGE_STATS_ENABLED=0",
            "LANG=C.UTF-8",
        ]
        step("ray up", "ray", "up", "-y", "--no-config-cache", cluster, timeout=240)
        sweep = "cd ~/cnn-sweeps && sweep run s001-model2 --seeds 1 --quick --address auto --out ~/results"
        ran = step("ray exec (sweep)", "ray", "exec", cluster, sweep, timeout=240)
        step("ray rsync-down", "ray", "rsync-down", cluster, "~/results/", f"{home}/fetched/")
        step("ray down", "ray", "down", "-y", cluster, timeout=60)

        rows = pd.read_parquet(home / "fetched" / "epochs")
        assert list(rows.seed) == [0] and not rows.duplicated(["step", "seed", "epoch"]).any(), ran.stdout
        # Nothing of the cluster is left, only the launcher's shared ssh connections (both ends), which would linger
        # 10 s more (ControlPersist): stopped here, by PID.
        left = {pid: _name(pid) for pid in pids_of(uid)}
        assert set(left.values()) <= {"ssh", "sshd"}, f"processes of the cluster's user left after `ray down`: {left}"
        assert not stop_pids(lambda: pids_of(uid))
    finally:
        if uid is not None:
            stop_pids(lambda: pids_of(uid))  # after a failure: whatever is left
            subprocess.run(["userdel", "--remove", user], capture_output=True)
        if sshd is not None:
            sshd.terminate()
            sshd.wait(timeout=10)
        ssh_sockets = Path("/tmp") / f"ray_ssh_{hashlib.sha256(user.encode()).hexdigest()[:10]}"  # Ray's ControlPath
        for folder in (work, work.with_name(work.name + "c"), work.with_name(work.name + "l"), ssh_sockets):
            shutil.rmtree(folder, ignore_errors=True)
        with capsys.disabled():
            print("\n" + "\n".join(f"  {name}: {seconds:.1f} s" for name, seconds in times.items()))
