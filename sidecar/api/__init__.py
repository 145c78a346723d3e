"""The local HTTP API: the aiohttp routes (`server`), the JSON bodies they serve (`bodies`), pure
functions of the agent's read model (`sidecar.state`), and how connections are accepted
(`serving`: slow and surplus clients); see `openapi.yaml`."""
