"""The remote half of an ``ssh`` target: probe the machine, start, watch, signal and stop its ipykernel.

Sent as source over SSH and run as ``PYTHON - COMMAND JSON`` by whatever Python the remote has,
so it needs nothing of jupyter_compute and must stay standard-library only and valid on Python
3.8. Every command prints JSON lines on stdout. The kernel is started in a session of its own,
bound to 127.0.0.1, so it outlives the SSH connection that started it and is reached only
through the tunnel.
"""
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

PREFIX = "kernel-jc-"


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def ipykernel_version():
    try:
        import importlib.util
        if importlib.util.find_spec("ipykernel") is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        from importlib.metadata import version
        return version("ipykernel")
    except Exception:
        return "unknown"


def memory_gb():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2.0 ** 20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2.0 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def gpus():
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=5, check=True)
    except (subprocess.SubprocessError, OSError):
        return []
    found = []
    for line in out.stdout.decode(errors="replace").strip().splitlines():
        name, _, mem = line.partition(",")
        try:
            found.append({"name": name.strip(), "memory_mb": int(mem.strip() or 0)})
        except ValueError:
            found.append({"name": name.strip(), "memory_mb": None})
    return found


def facts():
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    gpu_list = gpus()
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": sys.executable,
            "python_version": platform.python_version(), "ipykernel": ipykernel_version(), "vcpus": cpus,
            "memory_gb": memory_gb(), "gpus": len(gpu_list), "gpu_list": gpu_list, "load": load}


def runtime_dir():
    try:
        from jupyter_core.paths import jupyter_runtime_dir
        path = jupyter_runtime_dir()
    except Exception:
        path = os.path.join(os.path.expanduser("~"), ".local", "share", "jupyter", "runtime")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def alive(pid, conn_file):
    """Whether ``pid`` is still the kernel started with ``conn_file`` (a reused pid is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    proc = "/proc/%d" % pid
    if os.path.isdir("/proc/self"):
        try:
            with open(proc + "/cmdline", "rb") as f:
                cmdline = f.read()
            with open(proc + "/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except OSError:
            return False
        return conn_file.encode() in cmdline and state != "Z"
    return True


def launch(arg):
    version = ipykernel_version()
    if version is None:
        emit({"error": "no_ipykernel", "python": sys.executable, "python_version": platform.python_version()})
        return 0
    rdir = runtime_dir()
    ident = arg.get("id") or uuid.uuid4().hex[:12]
    conn_file = os.path.join(rdir, PREFIX + ident + ".json")
    log_file = os.path.join(rdir, PREFIX + ident + ".log")
    env = dict(os.environ)
    # Without a parent to poll, the kernel lives until it is told to stop.
    for k in ("JPY_PARENT_PID", "JPY_INTERRUPT_EVENT"):
        env.pop(k, None)
    env.update(arg.get("env") or {})
    if arg.get("key"):
        # A restart: the new kernel signs with the old one's key, so connected clients carry on.
        # Its ports are still its own choice (0 here); it writes them back.
        fd = os.open(conn_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"key": arg["key"], "ip": "127.0.0.1", "transport": "tcp", "signature_scheme": "hmac-sha256",
                       "shell_port": 0, "iopub_port": 0, "stdin_port": 0, "control_port": 0, "hb_port": 0}, f)
    exit_file = exit_file_of(conn_file)
    try:
        os.remove(exit_file)  # a restart's: the kernel before this one's
    except OSError:
        pass
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        # The kernel binds ports of its own choosing and writes them, with a key, to conn_file:
        # ports chosen here and bound there could be taken in between. A small waiter is its
        # parent, to write down how it ended: nothing else here outlives this call.
        # The kernel's command goes in on stdin: only the kernel's own command line names it.
        waiter = subprocess.Popen([sys.executable, "-c", WAITER, exit_file, log_file, os.path.expanduser("~")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                                  close_fds=True, start_new_session=True)
    finally:
        os.close(log)
    waiter.stdin.write(json.dumps([sys.executable, "-m", "ipykernel_launcher", "-f", conn_file,
                                   "--ip=127.0.0.1"]).encode() + b"\n")
    waiter.stdin.close()
    first = waiter.stdout.readline()
    waiter.stdout.close()
    try:
        pid = int(first)
    except ValueError:
        waiter.wait()
        emit({"error": "the kernel could not be started with %s" % sys.executable})
        return 0
    conn = None
    deadline = time.monotonic() + float(arg.get("ready", 60))
    while time.monotonic() < deadline and waiter.poll() is None:
        conn = written_connection(conn_file)
        if conn is not None:
            break
        time.sleep(0.02)
    if conn is None:
        code = waiter.poll()
        if code is None:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        else:
            code = exit_code(conn_file, 1.0)
        with open(log_file, "rb") as f:
            tail = f.read()[-2000:].decode(errors="replace")
        emit({"error": "the kernel did not start (%s): %s" % (
            "exit code %s" % code if code is not None else "no ports within the time allowed", tail.strip())})
        return 0
    emit({"pid": pid, "connection": conn, "conn_file": conn_file, "log_file": log_file,
          "facts": facts()})
    return 0


#: The kernel's parent on the remote machine: starts it in a session of its own (so a signal reaches
#: its whole process group), says its pid, waits for it and writes down its return code.
WAITER = (
    "import json, os, subprocess, sys\n"
    "exit_file, log_file, cwd = sys.argv[1:4]\n"
    "argv = json.loads(sys.stdin.readline())\n"
    "log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)\n"
    "proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=cwd,\n"
    "                        close_fds=True, start_new_session=True)\n"
    "os.close(log)\n"
    "sys.stdout.write('%d\\n' % proc.pid)\n"
    "sys.stdout.close()\n"
    "code = proc.wait()\n"
    "fd = os.open(exit_file + '.part', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n"
    "os.write(fd, str(code).encode())\n"
    "os.close(fd)\n"
    "os.replace(exit_file + '.part', exit_file)\n"
)


def exit_file_of(conn_file):
    return conn_file[:-len(".json")] + ".exit" if conn_file.endswith(".json") else conn_file + ".exit"


def exit_code(conn_file, wait=0.0):
    """The kernel's return code as its waiter wrote it (negative: the signal), or None."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(exit_file_of(conn_file)) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def written_connection(path):
    """The connection file a kernel wrote, once complete; None before."""
    try:
        with open(path) as f:
            conn = json.load(f)
    except (OSError, ValueError):
        return None
    ports = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
    return conn if all(conn.get(p) for p in ports) and conn.get("key") else None


def adopt(arg):
    pid, conn_file = int(arg["pid"]), arg["conn_file"]
    if not alive(pid, conn_file):
        emit({"alive": False})
        return 0
    try:
        with open(conn_file) as f:
            conn = json.load(f)
    except (OSError, ValueError):
        emit({"alive": False})
        return 0
    emit({"alive": True, "pid": pid, "connection": conn, "conn_file": conn_file,
          "log_file": arg.get("log_file"), "facts": facts()})
    return 0


def watch(arg):
    """Say "alive" once, then a beat a second while the kernel lives, and "exited" when it is gone."""
    pid, conn_file = int(arg["pid"]), arg["conn_file"]
    interval = float(arg.get("interval", 0.5))
    beat = time.monotonic()
    try:
        if not alive(pid, conn_file):
            emit({"alive": False, "code": exit_code(conn_file, 1.0)})
            return 0
        emit({"alive": True})
        while alive(pid, conn_file):
            time.sleep(interval)
            if time.monotonic() - beat >= 1.0:
                # Writing is how this notices that the SSH session behind it is gone.
                beat = time.monotonic()
                emit({"beat": True})
        emit({"exited": True, "code": exit_code(conn_file, 1.0)})
    except (BrokenPipeError, OSError):
        pass
    return 0


def send_signal(arg):
    pid, conn_file = int(arg["pid"]), arg["conn_file"]
    if not alive(pid, conn_file):
        emit({"ok": False, "alive": False})
        return 0
    sig = getattr(signal, arg.get("signal", "SIGINT"))
    try:
        os.killpg(pid, sig)
    except OSError:
        os.kill(pid, sig)
    emit({"ok": True})
    return 0


def stop(arg):
    pid, conn_file = int(arg["pid"]), arg["conn_file"]
    was = alive(pid, conn_file)
    if was:
        for sig, grace in ((signal.SIGTERM, float(arg.get("grace", 5))), (signal.SIGKILL, 3.0)):
            try:
                os.killpg(pid, sig)
            except OSError:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and alive(pid, conn_file):
                time.sleep(0.05)
            if not alive(pid, conn_file):
                break
    if was:
        exit_code(conn_file, 1.0)  # its waiter writes it down as it goes; removed with the rest
    for path in (conn_file, arg.get("log_file"), exit_file_of(conn_file)):
        if path and os.path.basename(path).startswith(PREFIX):
            try:
                os.remove(path)
            except OSError:
                pass
    emit({"ok": not alive(pid, conn_file), "was_running": was})
    return 0


def tail(arg):
    path, n = arg.get("log_file"), int(arg.get("bytes", 4000))
    text = ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            text = f.read().decode(errors="replace")
    except (OSError, TypeError):
        pass
    emit({"log": text})
    return 0


def probe(arg):
    emit({"facts": facts()})
    return 0


COMMANDS = {"probe": probe, "launch": launch, "adopt": adopt, "watch": watch, "signal": send_signal,
            "stop": stop, "tail": tail}


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        emit({"error": "usage", "commands": sorted(COMMANDS)})
        return 2
    arg = json.loads(argv[2]) if len(argv) > 2 else {}
    return COMMANDS[argv[1]](arg)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
