"""A model server of the ML trading bot: blue runs model v3, green v4.
GET /health -> {"status", "color", "model"}; GET /predict -> a signal, or 500
when the model is broken (v4 divides by a feature that is zero at night)."""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

color, port, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
broken = model == "v4"

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/health":
            self.send(200, {"status": "degraded" if broken else "healthy", "color": color, "model": model})
        elif self.path == "/predict":
            if broken:
                self.send(500, {"error": "ZeroDivisionError: volume feature is 0"})
            else:
                self.send(200, {"signal": "long", "confidence": 0.71, "model": model})
        else:
            self.send(404, {})

ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
