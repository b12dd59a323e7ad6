"""A small RTSP server for the stream tests: GStreamer's gst-rtsp-server serving a live test
pattern as RTP/JPEG on 127.0.0.1.

Runs under the system python3 (python3-gi, gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-base/-good), not the project's virtual environment:

    python3 tests/servers/rtsp_server.py PORT [udp|tcp|any]

The transport argument restricts what the server accepts (``udp``: RTP over UDP only, as some
cameras do). It prints ``ready rtsp://127.0.0.1:PORT/test`` once it listens and serves until
killed.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball"
    " ! video/x-raw,format=I420,width=320,height=240,framerate=10/1"
    " ! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
)
TRANSPORTS = {
    "udp": GstRtsp.RTSPLowerTrans.UDP,
    "tcp": GstRtsp.RTSPLowerTrans.TCP,
    "any": GstRtsp.RTSPLowerTrans.UDP | GstRtsp.RTSPLowerTrans.TCP,
}


def main() -> None:
    port, transport = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "any"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    factory.set_protocols(TRANSPORTS[transport])
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print(f"ready rtsp://127.0.0.1:{port}/test", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
