"""One module per HTTP API over the one exchange: request models, conversion to the neutral request,
rendering of events and errors."""
