"""`claude-max serve`: an OpenAI-compatible server on this machine, over the same runner and billing
guard as the llm plugin. Loopback only by default; anything else needs an API key and a flag."""
