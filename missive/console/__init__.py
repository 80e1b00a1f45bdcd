"""The console: Missive's own web pages at /console (docs/console.md).

Server-rendered (Jinja2 templates in templates/), one stylesheet and one small script of
our own in static/ (live.js polls the live parts of a page; everything reads without
it). Sign-in with the account's api_key and api_secret; every query is the account's.
"""

from __future__ import annotations

from starlette.routing import Route

from missive.console import pages, setup
from missive.console.web import static

routes = [
    Route("/console", pages.overview, methods=["GET"]),
    Route("/console/sign-in", pages.sign_in_form, methods=["GET"]),
    Route("/console/sign-in", pages.sign_in, methods=["POST"]),
    Route("/console/sign-out", pages.sign_out, methods=["POST"]),
    Route("/console/messages", pages.message_list, methods=["GET"]),
    Route("/console/messages/{message_uuid}", pages.message_page, methods=["GET"]),
    Route("/console/messages/{message_uuid}/webhooks/{webhook_id}/send-again", pages.send_again, methods=["POST"]),
    Route("/console/channels", setup.channels, methods=["GET"]),
    Route("/console/channels", setup.add_link, methods=["POST"]),
    Route("/console/channels/{link_id}", setup.link_page, methods=["GET"]),
    Route("/console/channels/{link_id}", setup.change_link, methods=["POST"]),
    Route("/console/channels/{link_id}/remove", setup.remove_link, methods=["POST"]),
    Route("/console/numbers", setup.add_number, methods=["POST"]),
    Route("/console/numbers/{number}/remove", setup.remove_number, methods=["POST"]),
    Route("/console/applications", setup.add_application, methods=["POST"]),
    Route("/console/static/{name}", static, methods=["GET"]),
]
