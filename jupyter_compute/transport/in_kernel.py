"""The variable-moving protocol shared by both ends: framing, pickling and the target's side.

This module is imported by jupyter_compute and also sent as source into a target's kernel,
which may run another Python with nothing but the standard library, so it must stay
stdlib-only and valid on Python 3.8. A message is a JSON header frame followed by the binary
frames it announces; each frame is an 8-byte big-endian length and its bytes. The frames
travel on a stream: anything with ``sendall`` and ``recv_into`` (a socket, a ``ChunkedStream``)
and, where it gathers small writes, ``flush``.
"""
import collections
import hmac
import io
import json
import pickle
import socket
import struct
import sys
import threading
import types

PROTOCOL = 1
PICKLE_PROTOCOL = 5
MAX_HEADER = 16 * 2**20
_LEN = struct.Struct("!Q")


class ProtocolError(Exception):
    pass


class VariableError(Exception):
    """A variable could not be pickled or loaded: args are (name, message)."""


# -- framing ---------------------------------------------------------------------------------------
def send_frames(sock, frames):
    for frame in frames:
        view = memoryview(frame).cast("B")
        sock.sendall(_LEN.pack(view.nbytes))
        if view.nbytes:
            sock.sendall(view)


def recv_exact(sock, n):
    """Read n bytes into a fresh bytearray (writable, so arrays loaded from it are writable)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], min(n - got, 16 * 2**20))
        if k == 0:
            raise ProtocolError("the other end closed the connection")
        got += k
    return buf


def recv_frame(sock, limit=None):
    (n,) = _LEN.unpack(bytes(recv_exact(sock, _LEN.size)))
    if limit is not None and n > limit:
        raise ProtocolError("frame of %d bytes exceeds the limit of %d" % (n, limit))
    return recv_exact(sock, n)


def send_msg(sock, header, frames=()):
    frames = list(frames)
    header = dict(header, nframes=len(frames))
    send_frames(sock, [json.dumps(header).encode("utf-8")] + frames)


def recv_msg(sock):
    header = json.loads(bytes(recv_frame(sock, MAX_HEADER)).decode("utf-8"))
    frames = [recv_frame(sock) for _ in range(int(header.get("nframes", 0)))]
    return header, frames


# -- pickling --------------------------------------------------------------------------------------
def _pickler_class():
    """cloudpickle's Pickler (functions and classes by value) when available, else pickle's."""
    try:
        import cloudpickle
        base = cloudpickle.Pickler
    except Exception:
        base = pickle.Pickler

    class CountingPickler(base):
        # Code objects only load on the Python minor version that compiled them; counting them
        # lets the receiver refuse a mismatch with a clear message instead of crashing.
        code_objects = 0

        def reducer_override(self, obj):
            if type(obj) is types.CodeType:
                self.code_objects += 1
            parent = getattr(super(), "reducer_override", None)
            return parent(obj) if parent is not None else NotImplemented

    return CountingPickler


def dump_value(value):
    """Pickle one value; returns (frames, code_objects): the pickle, then its out-of-band buffers."""
    buffers = []
    out = io.BytesIO()
    pickler = _pickler_class()(out, protocol=PICKLE_PROTOCOL, buffer_callback=buffers.append)
    pickler.dump(value)
    frames = [out.getbuffer()]
    for b in buffers:
        try:
            frames.append(b.raw())
        except BufferError:  # not contiguous: send a contiguous copy
            frames.append(memoryview(bytes(b)))
    return frames, pickler.code_objects


def load_value(frames):
    return pickle.loads(frames[0], buffers=frames[1:])


def describe_error(exc):
    return "%s: %s" % (type(exc).__name__, exc)


def python_info():
    try:
        import cloudpickle
        cp = getattr(cloudpickle, "__version__", "unknown")
    except Exception:
        cp = None
    return {"python": list(sys.version_info[:3]), "implementation": sys.implementation.name,
            "pickle": pickle.HIGHEST_PROTOCOL, "cloudpickle": cp, "protocol": PROTOCOL}


def install_cloudpickle(source):
    """Make cloudpickle importable from its source, for a target that lacks it."""
    pkg = types.ModuleType("cloudpickle")
    pkg.__path__ = []
    mod = types.ModuleType("cloudpickle.cloudpickle")
    mod.__package__ = "cloudpickle"
    sys.modules["cloudpickle"] = pkg
    sys.modules["cloudpickle.cloudpickle"] = mod
    try:
        exec(compile(source, "cloudpickle/cloudpickle.py", "exec"), mod.__dict__)
    except BaseException:
        del sys.modules["cloudpickle"], sys.modules["cloudpickle.cloudpickle"]
        raise
    pkg.cloudpickle = mod
    for name in ("Pickler", "CloudPickler", "dumps", "loads", "dump", "load",
                 "register_pickle_by_value", "unregister_pickle_by_value"):
        if hasattr(mod, name):
            setattr(pkg, name, getattr(mod, name))
    pkg.__version__ = "injected"


def pack_values(names, values):
    """Pickle values for sending: (descriptions, frames), or raise naming the variable."""
    descs, frames = [], []
    for name in names:
        try:
            f, code = dump_value(values[name])
        except Exception as e:
            raise VariableError(name, describe_error(e))
        descs.append({"name": name, "frames": len(f), "code": code,
                      "nbytes": sum(memoryview(x).nbytes for x in f)})
        frames.extend(f)
    return descs, frames


def unpack_values(descs, frames):
    """Load values described by pack_values; raise VariableError on the first failure."""
    out, i = {}, 0
    for d in descs:
        part = frames[i:i + d["frames"]]
        i += d["frames"]
        try:
            out[d["name"]] = load_value(part)
        except Exception as e:
            raise VariableError(d["name"], describe_error(e))
    return out


# -- streams over messages -------------------------------------------------------------------------
class ChunkedStream(object):
    """A blocking byte stream over a channel of messages with binary buffers (a comm).

    ``sendall`` gathers writes of up to ``gather`` bytes and cuts larger ones into messages of at
    most ``chunk`` bytes, each sent with ``send_chunk(buffer)``; ``flush`` sends what was gathered.
    Whoever receives the channel's messages calls ``feed`` with their buffers, and ``finish`` when
    it ends; ``recv_into`` reads them in order, waiting at most ``timeout`` seconds for more.
    """

    def __init__(self, send_chunk, chunk, peer="the other end", timeout=120.0, gather=256 * 2**10):
        self.send_chunk = send_chunk
        self.chunk = chunk
        self.peer = peer
        self.timeout = timeout
        self.gather = gather
        self._chunks = collections.deque()
        self._cond = threading.Condition()
        self._eof = False
        self._error = None
        self._out = bytearray()

    def feed(self, buffers, error=None):
        with self._cond:
            if error:
                self._error = error
                self._eof = True
            for b in buffers:
                if len(b):
                    self._chunks.append(memoryview(b).cast("B"))
            self._cond.notify_all()

    def finish(self, error=None):
        with self._cond:
            self._eof = True
            if error and not self._error:
                self._error = error
            self._cond.notify_all()

    def flush(self):
        if self._out:
            out, self._out = bytes(self._out), bytearray()
            self.send_chunk(out)

    def sendall(self, data):
        view = memoryview(data).cast("B")
        if len(self._out) + len(view) <= self.gather:
            self._out += view
            return
        self.flush()
        for i in range(0, len(view), self.chunk):
            self.send_chunk(view[i:i + self.chunk])

    def recv_into(self, buffer, nbytes=0):
        self.flush()  # the other end may be waiting for what was gathered
        view = memoryview(buffer).cast("B")
        want = nbytes or len(view)
        with self._cond:
            if not self._cond.wait_for(lambda: self._chunks or self._eof, self.timeout):
                raise socket.timeout("nothing arrived from %s for %g s" % (self.peer, self.timeout))
            if not self._chunks:
                if self._error:
                    raise ProtocolError(self._error)
                return 0
            head = self._chunks[0]
            k = min(want, len(head))
            view[:k] = head[:k]
            if k == len(head):
                self._chunks.popleft()
            else:
                self._chunks[0] = head[k:]
            return k


# -- the target's side -----------------------------------------------------------------------------
def serve(stream, token, namespace):
    """Answer one push or pull request against ``namespace`` on ``stream``, presenting ``token`` first."""
    send_frames(stream, [token.encode("ascii")])
    send_msg(stream, python_info())
    request, frames = recv_msg(stream)
    op = request.get("op")
    if op == "abort":
        return
    if request.get("cloudpickle_source"):
        install_cloudpickle(bytes(frames.pop(0)).decode("utf-8"))
    if op == "push":
        try:
            values = unpack_values(request["vars"], frames)
        except VariableError as e:
            send_msg(stream, {"ok": False, "name": e.args[0], "error": e.args[1]})
            return
        # All or nothing: a failed load leaves the namespace as it was.
        namespace.update(values)
        send_msg(stream, {"ok": True, "names": list(values)})
    elif op == "pull":
        missing = [n for n in request["names"] if n not in namespace]
        if missing:
            send_msg(stream, {"ok": False, "name": missing[0],
                              "error": "NameError: name %r is not defined on the target" % missing[0]})
            return
        try:
            descs, out = pack_values(request["names"], namespace)
        except VariableError as e:
            send_msg(stream, {"ok": False, "name": e.args[0], "error": e.args[1]})
            return
        send_msg(stream, {"ok": True, "vars": descs}, out)
    else:
        raise ProtocolError("unknown request %r" % (op,))


def connect_back(host, port, token, namespace, timeout=120.0):
    """Connect back to the notebook over TCP and ``serve`` one request there."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        serve(sock, token, namespace)
    finally:
        sock.close()


def check_token(received, expected):
    return hmac.compare_digest(bytes(received), expected.encode("ascii"))


# -- a Jupyter server's kernel: transfers over comms (the websocket route) ---------------------------
def register_comm_target(target_name, shell):
    """Runs in the target's kernel: accept transfer comms, each served by a thread.

    Sent with the rest of this module, whose ``ChunkedStream``, ``serve`` and ``describe_error`` it uses.
    """
    import threading as _t
    kernel = shell.kernel
    manager = getattr(kernel, "comm_manager", None)
    if manager is None:
        import comm as _comm
        manager = _comm.get_comm_manager()
    if target_name in manager.targets:
        return

    def on_open(comm, msg):
        data = msg["content"]["data"]
        stream = ChunkedStream(lambda chunk: comm.send({}, buffers=[chunk]), int(data["chunk"]), "the notebook")
        comm.on_msg(lambda m: stream.feed(m.get("buffers") or []))
        comm.on_close(lambda m: stream.finish())
        ns = shell.user_ns

        def run():
            try:
                serve(stream, data["token"], ns)
                stream.flush()
            except BaseException as e:
                try:
                    comm.send({"error": describe_error(e)})
                except Exception:
                    pass
            finally:
                try:
                    comm.close()
                except Exception:
                    pass

        _t.Thread(target=run, name="jupyter-compute-transfer", daemon=True).start()

    manager.register_target(target_name, on_open)
