"""The investigator console (`claimscope console`): pages and a JSON API over ScoreStore.

`app.create_app(settings)` builds the FastAPI app; `server.ConsoleServer` runs it with
uvicorn in a thread (for `claimscope up` and tests); docs/console.md is the user guide.
"""
