// The MCP client of the SDK's 2.x generation: `@modelcontextprotocol/client`
// (`Client` pinned to protocol 2026-07-28 + `StreamableHTTPClientTransport`
// with an `OAuthClientProvider`). As with 1.x (client.mjs), discovery from the
// 401, dynamic registration, PKCE, the code exchange (with its RFC 9207 `iss`
// check) and refreshes are the SDK's own; the provider is the same in-memory
// one (the 2.x interface adds optional arguments only), which also keeps the
// discovery state (InMemoryOAuthProviderV2).

import { Client, StreamableHTTPClientTransport, UnauthorizedError } from '@modelcontextprotocol/client';
import { InMemoryOAuthProvider, recordingFetch } from './client.mjs';

export const PROTOCOL_VERSION = '2026-07-28';

/**
 * The in-memory provider plus the discovery state 2.x asks a provider to keep
 * with the code verifier, so the SDK can check, when the code comes back,
 * that it goes to the authorization server the flow started with (SEP-2352).
 */
export class InMemoryOAuthProviderV2 extends InMemoryOAuthProvider {
    /**
     * `clientMetadataUrl` (optional): the https URL of this client's Client ID
     * Metadata Document. The SDK uses it as the client_id, instead of
     * registering, when the authorization server's metadata says
     * `client_id_metadata_document_supported: true`.
     */
    constructor({ clientMetadataUrl, ...rest }) {
        super(rest);
        this._clientMetadataUrl = clientMetadataUrl;
    }
    get clientMetadataUrl() {
        return this._clientMetadataUrl;
    }
    saveDiscoveryState(state) {
        this._discoveryState = state;
    }
    discoveryState() {
        return this._discoveryState;
    }
    invalidateCredentials(scope) {
        super.invalidateCredentials(scope);
        if (scope === 'all' || scope === 'discovery') this._discoveryState = undefined;
    }
}

/**
 * One MCP client session through the 2.x SDK, the same shape as McpSession:
 *   start()     connect; null when connected, else the authorization URL
 *   complete()  transport.finishAuth(callback parameters) and reconnect
 */
export class McpSessionV2 {
    constructor({ mcpUrl, provider, name = 'mcp-oauth-proxy-e2e-v2' }) {
        this.mcpUrl = mcpUrl;
        this.provider = provider;
        this.fetchLog = [];
        this.client = new Client(
            { name, version: '2.0.0' },
            { capabilities: {}, versionNegotiation: { mode: { pin: PROTOCOL_VERSION } } }
        );
        this.transport = undefined;
    }
    _transport() {
        return new StreamableHTTPClientTransport(new URL(this.mcpUrl), {
            authProvider: this.provider,
            fetch: recordingFetch(this.fetchLog)
        });
    }
    async start() {
        const before = this.provider.redirects.length;
        this.transport = this._transport();
        try {
            await this.client.connect(this.transport);
            return null;
        } catch (e) {
            if (!(e instanceof UnauthorizedError)) throw e;
        }
        const url = this.provider.redirects[before];
        if (!url) throw new Error('the SDK raised UnauthorizedError without producing an authorization URL');
        return url;
    }
    /** `params`: the authorization response's query parameters (code, state, iss). */
    async complete(params) {
        await this.transport.finishAuth(new URLSearchParams(params));
        this.transport = this._transport();
        await this.client.connect(this.transport);
    }
    negotiatedVersion() {
        return this.client.getNegotiatedProtocolVersion();
    }
    async listTools() {
        return this.client.listTools(undefined, { timeout: 20000 });
    }
    /** Calls a tool and returns the parsed JSON of its text answer. */
    async callJson(name, args = {}) {
        const result = await this.client.callTool({ name, arguments: args }, { timeout: 20000 });
        const text = result?.content?.find(c => c.type === 'text')?.text;
        if (!text || result.isError) throw new Error(`${name} answered ${JSON.stringify(result).slice(0, 300)}`);
        return JSON.parse(text);
    }
    async close() {
        try {
            await this.client.close();
        } catch {
            // already closed
        }
    }
}
