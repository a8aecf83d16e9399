// The MCP client side: the official TypeScript SDK's Client on a
// StreamableHTTPClientTransport with an OAuthClientProvider. The SDK does
// discovery from the 401, dynamic client registration, PKCE, the
// authorization URL, the code exchange and refreshes by itself; this file only
// keeps what the SDK hands it in memory and passes the authorization URL to
// the browser driver, as the SDK's own example (simpleOAuthClient) does.
//
// Also: the loopback redirect listener (127.0.0.1:<port>/callback/<label>)
// that receives the authorization response in the browser.

import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

/** In-memory OAuthClientProvider (the SDK's interface). */
export class InMemoryOAuthProvider {
    /**
     * @param {object} opts
     * @param {string} opts.redirectUrl
     * @param {object} opts.clientMetadata  RFC 7591 metadata sent at registration
     * @param {object} [opts.clientInformation]  reuse an earlier registration
     */
    constructor({ redirectUrl, clientMetadata, clientInformation }) {
        this._redirectUrl = redirectUrl;
        this._clientMetadata = clientMetadata;
        this._clientInformation = clientInformation;
        this._tokens = undefined;
        this._codeVerifier = undefined;
        /** Every authorization URL the SDK asked us to open. */
        this.redirects = [];
        /** Every token set the SDK saved (code exchange, refreshes). */
        this.savedTokens = [];
        /** Every invalidateCredentials() call. */
        this.invalidations = [];
        /** The last `state` the SDK put in an authorization URL. */
        this.lastState = undefined;
    }
    get redirectUrl() {
        return this._redirectUrl;
    }
    get clientMetadata() {
        return this._clientMetadata;
    }
    state() {
        this.lastState = randomBytes(16).toString('base64url');
        return this.lastState;
    }
    clientInformation() {
        return this._clientInformation;
    }
    saveClientInformation(info) {
        this._clientInformation = info;
    }
    tokens() {
        return this._tokens;
    }
    saveTokens(tokens) {
        this._tokens = tokens;
        this.savedTokens.push(tokens);
    }
    /** Test hook: replace the stored tokens (e.g. with an expired access token). */
    setTokens(tokens) {
        this._tokens = tokens;
    }
    redirectToAuthorization(url) {
        this.redirects.push(new URL(url.toString()));
    }
    saveCodeVerifier(v) {
        this._codeVerifier = v;
    }
    codeVerifier() {
        if (!this._codeVerifier) throw new Error('No code verifier saved');
        return this._codeVerifier;
    }
    invalidateCredentials(scope) {
        this.invalidations.push(scope);
        if (scope === 'all' || scope === 'client') this._clientInformation = undefined;
        if (scope === 'all' || scope === 'tokens') this._tokens = undefined;
        if (scope === 'all' || scope === 'verifier') this._codeVerifier = undefined;
    }
}

/**
 * A fetch that records method, URL, status, the MCP headers (`mcp-*`,
 * lowercased) and the answer's `WWW-Authenticate` (as `www`, when present) of
 * every request the SDK makes (this client's and client-v2.mjs's).
 */
export function recordingFetch(log) {
    return async (input, init) => {
        const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
        const method = init?.method || (typeof input === 'object' && 'method' in input ? input.method : 'GET');
        const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
        const mcp = {};
        headers.forEach((value, name) => {
            if (name.startsWith('mcp-')) mcp[name] = value;
        });
        const res = await fetch(input, { ...init, signal: init?.signal ?? AbortSignal.timeout(20000) });
        const entry = { method, url: String(url), status: res.status, mcp };
        // The challenge of a refusal (401 / 403), as the SDK received it.
        const www = res.headers.get('www-authenticate');
        if (www) entry.www = www;
        log.push(entry);
        return res;
    };
}

/**
 * One MCP client session through the SDK.
 *   start()     connect; returns null when connected, or the authorization URL
 *               the SDK produced after the 401 (discovery + registration done).
 *   complete()  transport.finishAuth(code) (code exchange) and reconnect.
 */
export class McpSession {
    constructor({ mcpUrl, provider, name = 'mcp-oauth-proxy-e2e' }) {
        this.mcpUrl = mcpUrl;
        this.provider = provider;
        this.fetchLog = [];
        this.client = new Client({ name, version: '1.0.0' }, { capabilities: {} });
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
    async complete(code) {
        await this.transport.finishAuth(code);
        this.transport = this._transport();
        await this.client.connect(this.transport);
    }
    async listTools() {
        return this.client.listTools(undefined, { timeout: 20000 });
    }
    /** Calls whoami and returns the parsed JSON it answers with. */
    async whoami() {
        const result = await this.client.callTool({ name: 'whoami', arguments: {} }, undefined, { timeout: 20000 });
        const text = result?.content?.find(c => c.type === 'text')?.text;
        if (!text) throw new Error(`whoami returned no text: ${JSON.stringify(result).slice(0, 300)}`);
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

/**
 * The loopback redirect listener. Authorization responses arrive at
 * /callback/<label>; wait(state) resolves with their query parameters.
 */
export async function startCallbackListener() {
    const arrived = new Map(); // state -> params
    const waiters = new Map(); // state -> resolve
    const all = [];
    const server = http.createServer((req, res) => {
        const url = new URL(req.url || '/', 'http://127.0.0.1');
        if (!url.pathname.startsWith('/callback/')) {
            res.writeHead(404).end();
            return;
        }
        const params = Object.fromEntries(url.searchParams.entries());
        params._path = url.pathname;
        all.push(params);
        const ok = typeof params.code === 'string' && !params.error;
        res.writeHead(ok ? 200 : 400, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(
            ok
                ? '<!doctype html><title>Signed in</title><h1>Signed in</h1><p>You can close this window.</p>'
                : '<!doctype html><title>Authorization failed</title><h1>Authorization failed</h1>'
        );
        const state = params.state ?? '';
        arrived.set(state, params);
        const w = waiters.get(state);
        if (w) {
            waiters.delete(state);
            w(params);
        }
    });
    await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
    });
    const port = server.address().port;
    return {
        origin: `http://127.0.0.1:${port}`,
        redirectUrl(label) {
            return `http://127.0.0.1:${port}/callback/${label}`;
        },
        all,
        wait(state, timeoutMs = 15000) {
            if (arrived.has(state)) return Promise.resolve(arrived.get(state));
            return new Promise((resolve, reject) => {
                const timer = setTimeout(() => {
                    waiters.delete(state);
                    reject(new Error(`no authorization response with state ${state} within ${timeoutMs} ms`));
                }, timeoutMs);
                waiters.set(state, params => {
                    clearTimeout(timer);
                    resolve(params);
                });
            });
        },
        async close() {
            server.closeAllConnections?.();
            await new Promise(resolve => server.close(() => resolve()));
        }
    };
}
