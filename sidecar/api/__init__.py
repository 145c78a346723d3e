"""The local HTTP API: the aiohttp routes (`server`), the JSON bodies they serve (`bodies`), pure
functions of the agent's read model (`sidecar.state`), how connections are accepted
(`serving`: slow and surplus clients), and the cap on streams and long polls (`streams`); see
`openapi.yaml`."""
