"""The endpoint (SageMaker bring-your-own-container contract) on FastAPI and uvicorn.

contract.py (limits, models, the pure parse → predict → format core), batching.py (the
micro-batcher), loading.py (the model, loaded in the background), app.py (the ASGI app), server.py
(uvicorn, signals, `command()` and the `serve` console script).
"""
