"""The camera → TFLite → MQTT loop that most Raspberry Pi tutorials and peer scripts write, for
comparison with the daemon (scripts/bench_lean.py runs both side by side).

One thread does everything in turn, as those scripts do: capture a frame (here from the scene the
daemon's ``synthetic`` source draws, at the same size), ``cv2.cvtColor`` to RGB, ``cv2.resize``
to the model's input, ``set_tensor``, ``invoke``, read and dequantize the output, take the top
five classes, ``json.dumps`` and paho's ``publish`` at QoS 1, with paho's network loop on its own
thread (``loop_start``). It is written the way such a script is written, not tuned: a
classification model only (one [1, classes] output).

    python scripts/naive_loop.py MODEL.tflite --size 640x480 --seconds 10 --port 1883

Prints one JSON line when done: results per second from ``--warmup`` seconds into the loop to its
end, and the number of results published.
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from ai_edge_litert.interpreter import Interpreter
from paho.mqtt.enums import CallbackAPIVersion

from edge.scene import MovingScene

SCENE_FPS = 30.0  # the synthetic source's clock when unpaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .tflite classification model")
    parser.add_argument("--size", default="640x480", help="capture size WxH")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--topic", default="edge/naive/cam/result")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    interpreter = Interpreter(model_path=args.model, num_threads=args.threads)
    interpreter.allocate_tensors()
    input_details = interpreter.get_input_details()[0]
    output_details = interpreter.get_output_details()[0]
    _, in_h, in_w, _ = input_details["shape"]
    out_scale, out_zero = output_details["quantization"]
    if len(output_details["shape"]) != 2:
        raise SystemExit("naive_loop.py runs classification models (one [1, classes] output)")

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(args.host, args.port)
    client.loop_start()

    camera = MovingScene(width, height)
    n = 0
    start = time.monotonic()
    counted_from = None
    counted = 0
    info = None
    while time.monotonic() - start < args.seconds:
        frame, _ = camera.frame(n / SCENE_FPS)  # BGR, as cv2.VideoCapture delivers it
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        resized = cv2.resize(rgb, (int(in_w), int(in_h)))
        input_data = np.expand_dims(resized, axis=0)
        if input_details["dtype"] == np.float32:
            input_data = (np.float32(input_data) - 127.5) / 127.5
        elif input_details["dtype"] == np.int8:
            input_data = (input_data.astype(np.int16) - 128).astype(np.int8)
        interpreter.set_tensor(input_details["index"], input_data)
        interpreter.invoke()
        output = interpreter.get_tensor(output_details["index"])[0]
        if out_scale:
            scores = out_scale * (output.astype(np.float32) - out_zero)
        else:
            scores = output.astype(np.float32)
        top = scores.argsort()[-5:][::-1]
        payload = {
            "ts": time.time(),
            "frame": n,
            "classes": [{"id": int(i), "score": round(float(scores[i]), 4)} for i in top],
        }
        info = client.publish(args.topic, json.dumps(payload), qos=1)
        n += 1
        now = time.monotonic()
        if counted_from is None and now - start >= args.warmup:
            counted_from, counted = now, n
    end = time.monotonic()
    if info is not None:
        info.wait_for_publish(5.0)
    client.disconnect()
    client.loop_stop()
    rate = (n - counted) / (end - counted_from) if counted_from is not None else 0.0
    print(json.dumps({"rate": rate, "results": n}))


if __name__ == "__main__":
    main()
