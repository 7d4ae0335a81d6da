"""A small FastAPI bookshop instrumented with monlight.

One call to setup_monlight() reports unhandled exceptions to the error
tracker and records http_requests_total and http_request_duration_seconds
for every request. The metrics client is shut down, and its buffer sent,
when the application's lifespan ends.

Configuration comes from the environment: MONLIGHT_ERROR_URL,
MONLIGHT_METRICS_URL and MONLIGHT_API_KEY (all required), and
MONLIGHT_PROJECT (default "monlight-demo"). Serve it with serve.py, or
with ``uvicorn app:app``.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, HTTPException

from monlight.integrations.fastapi import setup_monlight

USERS = {1: "ada", 2: "grace", 3: "linus"}
BOOKS = [{"id": 1, "title": "SICP"}, {"id": 2, "title": "TAOCP"}]

app = FastAPI(title="monlight demo bookshop")

clients = setup_monlight(
    app,
    error_tracker_url=os.environ["MONLIGHT_ERROR_URL"],
    metrics_collector_url=os.environ["MONLIGHT_METRICS_URL"],
    api_key=os.environ["MONLIGHT_API_KEY"],
    project=os.environ.get("MONLIGHT_PROJECT", "monlight-demo"),
    environment="demo",
)


@app.get("/")
async def index() -> dict:
    return {"service": "bookshop"}


@app.get("/books")
async def list_books() -> list[dict]:
    return BOOKS


@app.get("/users/{user_id}")
async def get_user(user_id: int) -> dict:
    if user_id not in USERS:
        raise HTTPException(status_code=404, detail=f"user {user_id} not found")
    return {"id": user_id, "name": USERS[user_id]}


@app.post("/orders", status_code=201)
async def create_order() -> dict:
    return {"order": 1001, "status": "created"}


def average_sale(sales: list[float]) -> float:
    return sum(sales) / len(sales)


def build_daily_report(day: str) -> dict:
    sales: list[float] = []  # no sales recorded: the average divides by zero
    return {"day": day, "average_sale": average_sale(sales)}


@app.get("/reports/{day}")
async def daily_report(day: str) -> dict:
    return build_daily_report(day)
