"""The local HTTP API: the aiohttp server (`server`) and the JSON bodies it serves
(`bodies`), pure functions of the agent's read model (`sidecar.state`); see `openapi.yaml`."""
