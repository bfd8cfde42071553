"""The investigator console (`claimscope console`): pages and a JSON API over ScoreStore.

`app.create_app(settings)` assembles the FastAPI app from `api` (the /api router), `pages`
(the HTML router), `auth` (the token guard) and `deps` (store, feedback sink, attention,
settings and templates as dependencies over app.state); `views` holds the response models;
`server.ConsoleServer` runs it with uvicorn in a thread (for `claimscope up` and tests);
docs/console.md is the user guide.
"""
