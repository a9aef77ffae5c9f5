"""The program every Azure ML job of a cell runs: read the cell and pushed variables, run it,
write the results --pull asked for.

Its source is sent (inline in the command, or as a file of the code asset) to an environment
that may have nothing of jupyter_compute, so it uses only the standard library and must stay
valid on Python 3.8. ``core.route.cell_frames`` is sent ahead of it (``jobs.RUNNER_SOURCE``).
"""

if __package__:  # imported, not run as the job's program
    from ...core.route import cell_frames


def main():
    import argparse
    import ast
    import importlib.util
    import json
    import linecache
    import os
    import pickle
    import struct
    import sys
    import traceback
    import types

    p = argparse.ArgumentParser(prog="jupyter_compute_job")
    p.add_argument("--code")
    p.add_argument("--file")
    p.add_argument("--inputs")
    p.add_argument("--outputs")
    p.add_argument("--pull", default="")
    a = p.parse_args()
    rank = int(os.environ.get("RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or 0)
    world = int(os.environ.get("WORLD_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or 1)
    out = a.outputs if rank == 0 else None
    report = {"python": list(sys.version_info[:3]), "world_size": world, "pulled": [], "missing": [],
              "unpicklable": {}}

    def write(name, data):
        if out:
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)

    def install_cloudpickle(path):
        pkg = types.ModuleType("cloudpickle")
        pkg.__path__ = []
        mod = types.ModuleType("cloudpickle.cloudpickle")
        mod.__package__ = "cloudpickle"
        sys.modules["cloudpickle"], sys.modules["cloudpickle.cloudpickle"] = pkg, mod
        with open(path, encoding="utf-8") as f:
            exec(compile(f.read(), "cloudpickle/cloudpickle.py", "exec"), mod.__dict__)
        pkg.cloudpickle = mod
        for name in ("Pickler", "CloudPickler", "dumps", "loads", "dump", "load"):
            if hasattr(mod, name):
                setattr(pkg, name, getattr(mod, name))

    def load(path):
        with open(path, "rb") as f:
            data = f.read()
        if data[:4] != b"JCP1":
            raise ValueError("not a jupyter_compute variable file")
        (count,) = struct.unpack(">I", data[4:8])
        frames, at = [], 8
        for _ in range(count):
            (n,) = struct.unpack(">Q", data[at:at + 8])
            frames.append(memoryview(data)[at + 8:at + 8 + n])
            at += 8 + n
        return pickle.loads(frames[0], buffers=frames[1:])

    def no_input(prompt=""):
        raise EOFError("input() cannot be answered: a cell sent as an Azure ML job runs without stdin. "
                       "Pass values with --push instead.")

    filename = "<cell>"
    # The cell runs in __main__ itself, so what it defines pickles as a script's would (and by value
    # with cloudpickle).
    ns = sys.modules["__main__"].__dict__
    ns.update({"rank": rank, "world_size": world, "input": no_input})
    try:
        if a.inputs and os.path.isdir(a.inputs):
            shipped = os.path.join(a.inputs, "_cloudpickle.py")
            if os.path.exists(shipped) and importlib.util.find_spec("cloudpickle") is None:
                install_cloudpickle(shipped)
            for entry in sorted(os.listdir(a.inputs)):
                if entry.endswith(".jcp"):
                    name = entry[:-4]
                    try:
                        ns[name] = load(os.path.join(a.inputs, entry))
                    except Exception as e:
                        raise RuntimeError("cannot load pushed variable %r on Python %s: %s: %s" % (
                            name, ".".join(map(str, sys.version_info[:3])), type(e).__name__, e))
        if a.file:
            with open(a.file, encoding="utf-8") as f:
                code = f.read()
        elif a.code == "-":
            code = sys.stdin.read()
        else:
            code = a.code or ""
        tree = ast.parse(code, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        exec(compile(tree, filename, "exec"), ns)
        if last is not None:
            value = eval(compile(last, filename, "eval"), ns)
            if value is not None:
                write("__result__.json", json.dumps({"text/plain": repr(value)}).encode("utf-8"))
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != filename:
            tb = tb.tb_next
        lines = traceback.format_exception(type(e), e, tb) if tb is not None else \
            traceback.format_exception_only(type(e), e)
        sys.stdout.flush()
        sys.stderr.write("".join(lines))
        sys.stderr.flush()
        write("__error__.json", json.dumps({"ename": type(e).__name__, "evalue": str(e), "frames": cell_frames(tb),
                                            "traceback": "".join(lines).rstrip("\n").split("\n")}).encode("utf-8"))
        write("__job__.json", json.dumps(report).encode("utf-8"))
        sys.exit(1)
    try:
        import cloudpickle
        dumps = cloudpickle.dumps
    except Exception:
        dumps = pickle.dumps
    for name in [n for n in a.pull.split(",") if n]:
        if name not in ns:
            report["missing"].append(name)
            continue
        try:
            write(name + ".pkl", dumps(ns[name], protocol=min(5, pickle.HIGHEST_PROTOCOL)))
            report["pulled"].append(name)
        except Exception as e:
            report["unpicklable"][name] = "%s: %s" % (type(e).__name__, e)
    write("__job__.json", json.dumps(report).encode("utf-8"))
    sys.stdout.flush()
