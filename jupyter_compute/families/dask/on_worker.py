"""What a Dask cell runs inside the workers: capture its output, run it, keep what --pull fetches.

Workers may not have jupyter_compute installed: Dask ships these functions by value, and they
use only the standard library, Dask, and IPython where the worker has it.
"""
from __future__ import annotations

import builtins
import types
from typing import Any

from ...core.route import cell_frames

# Each function here is copied into a namespace of its own (``_portable``) whose module cannot be
# imported anywhere, so Dask pickles it by value; they reach each other through that namespace.

def _w_state():
    """This worker process's shared state: output sinks by thread, and namespaces kept for pull."""
    import collections
    import sys
    import threading
    import types as _types

    name = "_jupyter_compute_dask_state"
    st = sys.modules.get(name)
    if st is None:
        fresh = _types.ModuleType(name)
        fresh.lock = threading.RLock()
        fresh.sinks = {}
        fresh.kept = collections.OrderedDict()
        fresh.installed = False
        st = sys.modules.setdefault(name, fresh)
    return st


def _w_install(st):
    """Route this process's stdout, stderr and IPython displays to the cell running on the writing thread."""
    import base64
    import sys
    import threading
    import time as _time

    with st.lock:
        if st.installed and getattr(sys.stdout, "_jupyter_compute", False) and getattr(sys.stderr, "_jupyter_compute", False):
            return
        if not st.installed:
            _w_define(st, base64, threading, _time)
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if not getattr(current, "_jupyter_compute", False):
                setattr(sys, name, st.Tee(name, current))
        st.installed = True


def _w_define(st, base64, threading, _time):
    """The classes and functions the cells of this process share; defined once per process."""
    chunk = 16000

    class Sink:
        """One running cell's output: text is sent per line (at most every 20 ms), or every 50 ms."""

        def __init__(self, run, emit):
            self.run = run
            self.emit = emit
            self.pieces = []
            self.size = 0
            self.last = 0.0
            self.lock = threading.Lock()

        def write(self, name, text):
            with self.lock:
                if self.pieces and self.pieces[-1][0] == name:
                    self.pieces[-1][1].append(text)
                else:
                    self.pieces.append((name, [text]))
                self.size += len(text)
                if self.size > chunk or ("\n" in text and _time.monotonic() - self.last >= 0.02):
                    self._send()

        def flush(self):
            with self.lock:
                self._send()

        def _send(self):
            # Under the lock, so the flusher thread and the cell's own thread never reorder text.
            pieces, self.pieces, self.size = self.pieces, [], 0
            self.last = _time.monotonic()
            for name, texts in pieces:
                text = "".join(texts)
                for i in range(0, len(text), chunk):
                    self.emit({"type": "stream", "name": name, "text": text[i:i + chunk]})

        def message(self, msg):
            with self.lock:
                self._send()
                self.emit(msg)

    class Tee:
        """sys.stdout / sys.stderr: a cell's thread writes to its sink, any other to the original stream."""
        _jupyter_compute = True

        def __init__(self, name, original):
            self._name = name
            self._original = original

        def write(self, text):
            sink = st.sinks.get(threading.get_ident())
            if sink is None:
                return self._original.write(text)
            if not isinstance(text, str):
                raise TypeError(f"write() argument must be str, not {type(text).__name__}")
            sink.write(self._name, text)
            return len(text)

        def writelines(self, lines):
            for line in lines:
                self.write(line)

        def flush(self):
            sink = st.sinks.get(threading.get_ident())
            if sink is not None:
                sink.flush()
            else:
                self._original.flush()

        def isatty(self):
            return False

        def __getattr__(self, name):
            return getattr(self._original, name)

    class StdinNotImplementedError(NotImplementedError):
        pass

    def no_input(prompt=""):
        raise StdinNotImplementedError(
            "input() cannot be answered: the dask route runs each cell as a batch task without stdin. "
            "Pass values in with --push instead.")

    def jsonable(data):
        out = {}
        for mime, value in (data or {}).items():
            if isinstance(value, (bytes, bytearray, memoryview)):
                value = base64.b64encode(bytes(value)).decode("ascii")
            if isinstance(value, (str, dict, list, int, float, bool)) or value is None:
                out[str(mime)] = value
        return out

    formatter = []

    def bundle(obj):
        """The mime bundle IPython would show for obj (its text form where IPython is missing)."""
        try:
            from IPython.core.formatters import DisplayFormatter
            if not formatter:
                formatter.append(DisplayFormatter())
            data, md = formatter[0].format(obj)
        except ImportError:
            data, md = {"text/plain": repr(obj)}, {}
            for mime, method in (("text/html", "_repr_html_"), ("text/markdown", "_repr_markdown_"),
                                 ("image/png", "_repr_png_"), ("image/svg+xml", "_repr_svg_")):
                fn = getattr(obj, method, None)
                if fn is not None:
                    try:
                        value = fn()
                    except Exception:
                        value = None
                    if value is not None:
                        data[mime] = value
        return jsonable(data), jsonable(md)

    def display(*objs, include=None, exclude=None, metadata=None, transient=None, display_id=None, raw=False,
                clear=False, update=False, **kwargs):
        sink = st.sinks.get(threading.get_ident())
        if sink is None:
            if st.original_display is not None:
                return st.original_display(*objs, include=include, exclude=exclude, metadata=metadata,
                                           transient=transient, display_id=display_id, raw=raw, clear=clear,
                                           update=update, **kwargs)
            print(*objs)
            return None
        if clear:
            clear_output(wait=True)
        if display_id is True:
            import uuid as _uuid
            display_id = _uuid.uuid4().hex
        for obj in objs:
            if raw:
                data, md = jsonable(obj), jsonable(metadata or {})
            else:
                data, md = bundle(obj)
                if metadata:
                    md.update(jsonable(metadata))
            sink.message({"type": "display", "data": data, "metadata": md, "display_id": display_id,
                          "update": bool(update)})
        if display_id is not None and not update:
            try:
                from IPython.core.display_functions import DisplayHandle
                return DisplayHandle(display_id)
            except ImportError:
                return None
        return None

    def clear_output(wait=False):
        sink = st.sinks.get(threading.get_ident())
        if sink is None:
            if st.original_clear is not None:
                return st.original_clear(wait=wait)
            return None
        sink.message({"type": "clear_output", "wait": bool(wait)})
        return None

    st.Sink, st.Tee, st.no_input, st.bundle = Sink, Tee, no_input, bundle
    st.display, st.clear_output = display, clear_output
    st.original_display = st.original_clear = None
    try:
        import IPython.core.display_functions as functions
        import IPython.display as public
    except ImportError:
        functions = public = None
    if functions is not None:
        # Cells import display from IPython: give them one that knows which cell is calling.
        st.original_display, st.original_clear = functions.display, functions.clear_output
        for module in (functions, public, __import__("sys").modules.get("IPython.core.display")):
            if module is not None and hasattr(module, "display"):
                module.display = display
                module.clear_output = clear_output

    def flusher():
        while True:
            _time.sleep(0.05)
            for sink in list(st.sinks.values()):
                if sink.pieces:
                    try:
                        sink.flush()
                    except Exception:
                        pass

    threading.Thread(target=flusher, name="jupyter-compute-output", daemon=True).start()


def _w_run(run_id, topic, code, pushed, rank, world_size, keep, forget=()):
    """Run one cell on this worker, its output going to ``topic``; returns its outcome. The
    namespaces of the cells in ``forget`` are dropped first."""
    import ast
    import builtins as _builtins
    import linecache
    import os
    import threading
    import traceback

    from distributed import get_worker

    st = _w_state()
    _w_install(st)
    if forget:
        _w_forget(forget)
    worker = get_worker()
    me = threading.get_ident()

    def emit(msg):
        msg["jc"] = run_id
        msg["rank"] = rank
        worker.log_event(topic, msg)

    sink = st.Sink(run_id, emit)
    emit({"type": "start", "worker": worker.address, "thread": me, "pid": os.getpid()})
    filename = f"<cell {run_id[:8]}>" if world_size == 1 else f"<cell {run_id[:8]} rank {rank}>"
    ns = {"__name__": "__main__", "__builtins__": _builtins, "rank": rank, "world_size": world_size,
          "display": st.display, "input": st.no_input}
    # Each pushed value travels boxed (see ``box``).
    ns.update({name: boxed["value"] for name, boxed in (pushed or {}).items()})
    out = {"status": "ok", "worker": worker.address, "result": None, "metadata": {}}
    st.sinks[me] = sink
    try:
        try:
            tree = ast.parse(code, filename, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
            exec(compile(tree, filename, "exec"), ns)
            if last is not None:
                value = eval(compile(last, filename, "eval"), ns)
                if value is not None:
                    out["result"], out["metadata"] = st.bundle(value)
        except BaseException as e:  # KeyboardInterrupt from an interrupt and SystemExit are the cell's too
            tb = e.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename != filename:
                tb = tb.tb_next
            if tb is None:
                lines = traceback.format_exception_only(type(e), e)
            else:
                lines = traceback.format_exception(type(e), e, tb)
            out.update(status="error", ename=type(e).__name__, evalue=str(e),
                       traceback="".join(lines).rstrip("\n").split("\n"), frames=cell_frames(tb))
    finally:
        st.sinks.pop(me, None)
        sink.flush()
        linecache.cache.pop(filename, None)
        # Kept before the cell is said to be over: a --pull may come at once.
        if keep and out["status"] == "ok":
            with st.lock:
                st.kept[run_id] = ns
                while len(st.kept) > 4:
                    st.kept.popitem(last=False)
        # A small outcome rides on the end event, which spares the notebook fetching the task's result.
        end = {"type": "end", "status": out["status"]}
        try:
            if len(repr(out)) <= 32768:
                emit({**end, "outcome": out})
                end = None
        except Exception:  # not serialisable as an event: the result is fetched instead
            pass
        if end is not None:
            emit(end)
    return out


def _w_fetch(run_id, names):
    """The named variables a finished cell left on this worker, for pull."""
    import cloudpickle

    ns = _w_state().kept.get(run_id)
    if ns is None:
        return {"gone": True}
    values, missing, unpicklable = {}, [], {}
    for name in names:
        if name not in ns:
            missing.append(name)
            continue
        try:
            # Out-of-band buffers are not copied: this costs little even for large arrays.
            cloudpickle.dumps(ns[name], protocol=5, buffer_callback=lambda b: None)
        except Exception as e:
            unpicklable[name] = f"{type(e).__name__}: {e}"
            continue
        values[name] = {"value": ns[name]}  # boxed, as pushed values are
    return {"values": values, "missing": missing, "unpicklable": unpicklable}


def _w_forget(run_ids):
    st = _w_state()
    with st.lock:
        for run_id in run_ids:
            st.kept.pop(run_id, None)
    return True


def _w_interrupt(run_id, thread_ids):
    """Raise KeyboardInterrupt in the threads still running this cell (between bytecodes: not in a sleep)."""
    import ctypes

    st = _w_state()
    n = 0
    for tid in thread_ids:
        sink = st.sinks.get(tid)
        if sink is not None and sink.run == run_id:
            n += ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(KeyboardInterrupt))
    return n


def _w_exit():
    """End this worker process just after answering; its nanny starts a fresh one."""
    import os
    import threading

    threading.Timer(0.1, os._exit, (1,)).start()
    return True


_WORKER_MODULE = "_jupyter_compute_dask_cell"


def _portable(*fns: types.FunctionType) -> dict[str, types.FunctionType]:
    """Copies of ``fns`` in a namespace of their own, named after a module no process can import."""
    ns: dict[str, Any] = {"__builtins__": builtins, "__name__": _WORKER_MODULE}
    for fn in fns:
        copy = types.FunctionType(fn.__code__, ns, fn.__name__, fn.__defaults__, fn.__closure__)
        copy.__module__, copy.__qualname__, copy.__doc__ = _WORKER_MODULE, fn.__qualname__, fn.__doc__
        copy.__kwdefaults__ = fn.__kwdefaults__
        ns[fn.__name__] = copy
    return ns


#: What the route sends to the workers, by name.
FUNCTIONS = _portable(_w_state, _w_install, _w_define, cell_frames, _w_run, _w_fetch, _w_forget, _w_interrupt, _w_exit)
