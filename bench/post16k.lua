-- wrk script: POST a 16 KiB body (wrk adds Content-Length) to the echo app.
wrk.method = "POST"
wrk.body = string.rep("a", 16384)
wrk.headers["Content-Type"] = "application/octet-stream"
