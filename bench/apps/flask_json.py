"""Flask app with one JSON route, served as ``flask_json:app`` (route ``/json``)."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/json")
def json_route():
    return jsonify(message="Hello, World!", items=[1, 2, 3])
