"""What the console's routes share, as FastAPI dependencies over `app.state` (set once by
`create_app`): the store, the feedback sink, the attention model, the settings, the page
templates and the provider profiles' ranking.

    @router.get("/api/recent")
    def api_recent(store: StoreDep, n: int = 50) -> list[Score]: ...

The getters take only the Request, so they add nothing to the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from jinja2 import Environment

from stream.console.heatmap import Attention
from stream.feedback import FeedbackSink
from stream.profiles import ProfileStore
from stream.settings import Settings
from stream.store import ScoreStore


async def get_store(request: Request) -> ScoreStore:
    return request.app.state.store


async def get_feedback(request: Request) -> FeedbackSink:
    return request.app.state.feedback


async def get_attention(request: Request) -> Attention:
    return request.app.state.attention


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_templates(request: Request) -> Environment:
    return request.app.state.templates


async def get_profiles(request: Request) -> ProfileStore:
    return request.app.state.profiles


StoreDep = Annotated[ScoreStore, Depends(get_store)]
FeedbackDep = Annotated[FeedbackSink, Depends(get_feedback)]
AttentionDep = Annotated[Attention, Depends(get_attention)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TemplatesDep = Annotated[Environment, Depends(get_templates)]
ProfilesDep = Annotated[ProfileStore, Depends(get_profiles)]
