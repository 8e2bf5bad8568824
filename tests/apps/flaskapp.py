"""A small Flask app for the frameworks tests (needs RGUNICORN_TEST_VENV)."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/json")
def json_route():
    return jsonify(framework="flask", args=request.args.to_dict())


@app.post("/form")
def form():
    return "name=%s count=%d" % (request.form.get("name", ""), len(request.form))
