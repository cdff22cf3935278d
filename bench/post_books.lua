wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = "{\"query\": \"{ books(first: 20) { id title author { id name } } }\"}"
