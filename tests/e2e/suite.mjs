// End-to-end suite for mcp-oauth-proxy with real software on loopback ports:
//
//   official MCP SDK client ──▶ mcp-oauth-proxy ──▶ MCP server (official SDK, `whoami`)
//            │                       │
//            └── chromium ──────────▶└──▶ oidc-provider (upstream OAuth/OIDC server)
//
// Both SDK generations: 1.x (`@modelcontextprotocol/sdk`, scenarios 1-6 and 8) and
// 2.x (`@modelcontextprotocol/client` / `server`, protocol 2026-07-28,
// scenario 7, behind a third proxy). Scenario 8 runs a fourth proxy with the
// audit trail in a file and the admin listener, and drives it with the
// proxy binary's own `admin` and `audit verify` commands. Scenarios 9 and 10
// run the 2.x client against a fifth proxy that accepts Client ID Metadata
// Documents from an https host on 127.0.0.1 with a test CA (document-host.mjs):
// with `clientMetadataUrl` (the document URL is the client_id) and without
// (dynamic registration). Scenarios 11 and 12 run the 2.x client against a
// sixth proxy with an access policy: a write tool that needs a scope the
// first sign-in lacks (403 insufficient_scope, the SDK's step-up through the
// browser, the retried call), and an account outside OAUTH_PROXY_ALLOWED_USERS
// refused at sign-in.
//
// Prints `PASS <scenario>` / `FAIL <scenario>: <reason>` for each scenario and
// a closing `e2e: N passed, N failed` line; exits 1 on any FAIL.
//
// Environment (all optional):
//   E2E_PROXY_BIN   proxy binary (default <repo>/target/release/mcp-oauth-proxy)
//   E2E_CHROMIUM    browser (default /usr/bin/chromium)
//   E2E_ARTIFACTS   screenshots and proxy logs (default tests/e2e/artifacts)
//   E2E_ONLY        comma-separated scenario numbers to run, e.g. "1,2"

import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { SignJWT, decodeJwt, decodeProtectedHeader } from 'jose';

import { ACCOUNT, OUTSIDER, startUpstream } from './upstream.mjs';
import { startMcpServer } from './mcp-server.mjs';
import { PARAM_HEADER, startMcpServerV2 } from './mcp-server-v2.mjs';
import { InMemoryOAuthProvider, McpSession, startCallbackListener } from './client.mjs';
import { InMemoryOAuthProviderV2, McpSessionV2, PROTOCOL_VERSION } from './client-v2.mjs';
import { UnauthorizedError as UnauthorizedErrorV2 } from '@modelcontextprotocol/client';
import { CHROMIUM, authorizeInBrowser, launchBrowser, newContext } from './browser.mjs';
import { freePort, killAllProxies, startProxy } from './proxy.mjs';
import { startDocumentHost } from './document-host.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '../..');
const ARTIFACTS = resolve(process.env.E2E_ARTIFACTS || join(HERE, 'artifacts'));
const BINARY = resolve(process.env.E2E_PROXY_BIN || join(REPO, 'target/release/mcp-oauth-proxy'));
const SCENARIO_TIMEOUT_MS = 120000;
const REFRESH_GRACE_MS = 5000; // the proxy's documented reuse grace window
const ONLY = (process.env.E2E_ONLY || '')
    .split(',')
    .map(s => s.trim())
    .filter(Boolean);

// Keys shared with the proxy: the suite forges tokens with the JWT key.
const JWT_SIGNING_KEY = `e2e-jwt-${randomBytes(24).toString('hex')}`;
const ENCRYPTION_KEY = `e2e-enc-${randomBytes(24).toString('hex')}`;
const CONSENT_SIGNING_KEY = `e2e-consent-${randomBytes(24).toString('hex')}`;
const JWT_KEY_BYTES = new TextEncoder().encode(JWT_SIGNING_KEY);
const UPSTREAM_SCOPES = 'openid profile email offline_access';
// The admin API's bearer (scenario 8), and where that proxy's audit trail goes.
const ADMIN_TOKEN = `e2e-admin-${randomBytes(24).toString('hex')}`;
const AUDIT_LOG = join(ARTIFACTS, 'audit-ops.jsonl');
// The access policy of the sixth proxy (scenarios 11 and 12).
const POLICY_SCOPES = ['mcp:read', 'mcp:write'];
const POLICY_BASELINE = 'mcp:read'; // the 401's scope: what no tool rule names
const POLICY_TOOL_SCOPES = 'write_*=mcp:write';
const POLICY_ALLOWED_USERS = `email:*@${ACCOUNT.email.split('@')[1]}`;

// ---------------------------------------------------------------- helpers

function expect(condition, message) {
    if (!condition) throw new Error(message);
}

function detail(message) {
    console.log(`    - ${message}`);
}

function sleep(ms) {
    return new Promise(r => setTimeout(r, ms));
}

function short(s, n = 24) {
    if (typeof s !== 'string') return String(s);
    return s.length > n ? `${s.slice(0, n)}…` : s;
}

function oneLine(s) {
    return String(s).replace(/\s+/g, ' ').trim().slice(0, 600);
}

function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
        promise,
        new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
        })
    ]).finally(() => clearTimeout(timer));
}

/** Claims of a JWT, or null for anything that is not one. */
function jwtClaims(token) {
    try {
        return decodeJwt(token);
    } catch {
        return null;
    }
}

function isProxyJwt(token, proxyBase) {
    const claims = jwtClaims(token);
    return !!claims && claims.iss === proxyBase;
}

function audList(aud) {
    return Array.isArray(aud) ? aud : [aud];
}

const INITIALIZE = {
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'e2e-raw', version: '1.0.0' } }
};

/** A raw MCP initialize POST to the proxy with the given bearer (or none). */
async function rawMcpPost(mcpUrl, token) {
    const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    const res = await fetch(mcpUrl, {
        method: 'POST',
        headers,
        body: JSON.stringify(INITIALIZE),
        signal: AbortSignal.timeout(15000)
    });
    const body = await res.text();
    return { status: res.status, www: res.headers.get('www-authenticate') || '', body };
}

/** A token endpoint request authenticated as the registered client (as the SDK would). */
async function tokenRequest(proxyBase, clientInfo, params) {
    const body = new URLSearchParams(params);
    const headers = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    const method = clientInfo.token_endpoint_auth_method || (clientInfo.client_secret ? 'client_secret_basic' : 'none');
    if (method === 'client_secret_basic') {
        const creds = `${encodeURIComponent(clientInfo.client_id)}:${encodeURIComponent(clientInfo.client_secret)}`;
        headers.authorization = `Basic ${Buffer.from(creds).toString('base64')}`;
    } else if (method === 'client_secret_post') {
        body.set('client_id', clientInfo.client_id);
        body.set('client_secret', clientInfo.client_secret);
    } else {
        body.set('client_id', clientInfo.client_id);
    }
    const res = await fetch(`${proxyBase}/token`, {
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.timeout(15000)
    });
    const text = await res.text();
    let json = null;
    try {
        json = JSON.parse(text);
    } catch {
        // not JSON
    }
    return { status: res.status, json, text };
}

function expectChallenge(r, proxy, what) {
    expect(r.status === 401, `${what}: expected 401, got ${r.status} (${oneLine(r.body).slice(0, 200)})`);
    const expected = `resource_metadata="${proxy.base}/.well-known/oauth-protected-resource/mcp"`;
    expect(
        r.www.includes(expected),
        `${what}: WWW-Authenticate lacks ${expected}: "${r.www}"`
    );
}

function clientMetadata(name, redirectUrl, authMethod = 'client_secret_basic') {
    return {
        client_name: name,
        redirect_uris: [redirectUrl],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: authMethod
    };
}

// ---------------------------------------------------------------- world

const world = {};

async function setUp() {
    mkdirSync(ARTIFACTS, { recursive: true });
    expect(existsSync(BINARY), `proxy binary not found at ${BINARY} (cargo build --release --bin mcp-oauth-proxy)`);
    expect(existsSync(CHROMIUM), `browser not found at ${CHROMIUM} (apt-get install -y chromium)`);

    const ports = new Set();
    while (ports.size < 8) ports.add(await freePort());
    const [upstreamPort, swapPort, passPort, v2Port, opsPort, opsAdminPort, cimdPort, policyPort] = [...ports];

    const secrets = {
        basic: randomBytes(24).toString('base64url'),
        post: randomBytes(24).toString('base64url'),
        v2: randomBytes(24).toString('base64url'),
        ops: randomBytes(24).toString('base64url'),
        cimd: randomBytes(24).toString('base64url'),
        policy: randomBytes(24).toString('base64url')
    };
    world.secrets = secrets;
    world.upstream = await startUpstream({
        port: upstreamPort,
        clients: [
            {
                client_id: 'mcp-proxy-basic',
                client_secret: secrets.basic,
                redirect_uri: `http://127.0.0.1:${swapPort}/oauth/callback`,
                auth_method: 'client_secret_basic'
            },
            {
                client_id: 'mcp-proxy-post',
                client_secret: secrets.post,
                redirect_uri: `http://127.0.0.1:${passPort}/oauth/callback`,
                auth_method: 'client_secret_post'
            },
            {
                client_id: 'mcp-proxy-v2',
                client_secret: secrets.v2,
                redirect_uri: `http://127.0.0.1:${v2Port}/oauth/callback`,
                auth_method: 'client_secret_basic'
            },
            {
                client_id: 'mcp-proxy-ops',
                client_secret: secrets.ops,
                redirect_uri: `http://127.0.0.1:${opsPort}/oauth/callback`,
                auth_method: 'client_secret_basic'
            },
            {
                client_id: 'mcp-proxy-cimd',
                client_secret: secrets.cimd,
                redirect_uri: `http://127.0.0.1:${cimdPort}/oauth/callback`,
                auth_method: 'client_secret_basic'
            },
            {
                client_id: 'mcp-proxy-policy',
                client_secret: secrets.policy,
                redirect_uri: `http://127.0.0.1:${policyPort}/oauth/callback`,
                auth_method: 'client_secret_basic'
            }
        ]
    });
    world.mcp = await startMcpServer({ userinfoUrl: world.upstream.userinfoUrl });
    world.mcp2 = await startMcpServerV2({ userinfoUrl: world.upstream.userinfoUrl });

    const common = {
        OAUTH_PROXY_STORAGE: 'memory',
        OAUTH_PROXY_UPSTREAM_ISSUER: world.upstream.issuer,
        OAUTH_PROXY_UPSTREAM_NAME: 'Example Identity',
        OAUTH_PROXY_UPSTREAM_SCOPES: UPSTREAM_SCOPES,
        OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS: 'prompt=consent',
        OAUTH_PROXY_CONSENT_REQUIRED: 'true',
        OAUTH_PROXY_JWT_SIGNING_KEY: JWT_SIGNING_KEY,
        OAUTH_PROXY_ENCRYPTION_KEY: ENCRYPTION_KEY,
        OAUTH_PROXY_CONSENT_SIGNING_KEY: CONSENT_SIGNING_KEY,
        OAUTH_PROXY_MCP_UPSTREAM_URL: world.mcp.url,
        OAUTH_PROXY_REGISTRATION_RATE_LIMIT: '0',
        OAUTH_PROXY_STATIC_DIR: join(REPO, 'static')
    };
    world.swap = await startProxy({
        name: 'swap',
        binary: BINARY,
        port: swapPort,
        logDir: ARTIFACTS,
        env: {
            ...common,
            OAUTH_PROXY_ENABLE_TOKEN_SWAP: 'true',
            OAUTH_PROXY_UPSTREAM_CLIENT_ID: 'mcp-proxy-basic',
            OAUTH_PROXY_UPSTREAM_CLIENT_SECRET: secrets.basic,
            OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT_AUTH_METHOD: 'client_secret_basic'
        }
    });
    world.pass = await startProxy({
        name: 'passthrough',
        binary: BINARY,
        port: passPort,
        logDir: ARTIFACTS,
        env: {
            ...common,
            OAUTH_PROXY_ENABLE_TOKEN_SWAP: 'false',
            OAUTH_PROXY_UPSTREAM_CLIENT_ID: 'mcp-proxy-post',
            OAUTH_PROXY_UPSTREAM_CLIENT_SECRET: secrets.post,
            OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT_AUTH_METHOD: 'client_secret_post'
        }
    });
    // Swap mode in front of the 2.x SDK's server.
    world.v2 = await startProxy({
        name: 'v2',
        binary: BINARY,
        port: v2Port,
        logDir: ARTIFACTS,
        env: {
            ...common,
            OAUTH_PROXY_MCP_UPSTREAM_URL: world.mcp2.url,
            OAUTH_PROXY_ENABLE_TOKEN_SWAP: 'true',
            OAUTH_PROXY_UPSTREAM_CLIENT_ID: 'mcp-proxy-v2',
            OAUTH_PROXY_UPSTREAM_CLIENT_SECRET: secrets.v2,
            OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT_AUTH_METHOD: 'client_secret_basic'
        }
    });
    // Swap mode with the operator's view (scenario 8): the audit trail in a
    // file (a fresh one each run), the admin listener and its token.
    rmSync(AUDIT_LOG, { force: true });
    // `audit verify` runs with the same settings, so it derives the
    // checkpoint key as the service did and checks every checkpoint.
    world.opsEnv = {
        OAUTH_PROXY_BIND: `127.0.0.1:${opsPort}`,
        OAUTH_PROXY_BASE_URL: `http://127.0.0.1:${opsPort}`,
        ...common,
        OAUTH_PROXY_UPSTREAM_CLIENT_ID: 'mcp-proxy-ops',
        OAUTH_PROXY_UPSTREAM_CLIENT_SECRET: secrets.ops
    };
    world.ops = await startProxy({
        name: 'ops',
        binary: BINARY,
        port: opsPort,
        logDir: ARTIFACTS,
        env: {
            ...common,
            OAUTH_PROXY_ENABLE_TOKEN_SWAP: 'true',
            OAUTH_PROXY_UPSTREAM_CLIENT_ID: 'mcp-proxy-ops',
            OAUTH_PROXY_UPSTREAM_CLIENT_SECRET: secrets.ops,
            OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT_AUTH_METHOD: 'client_secret_basic',
            OAUTH_PROXY_AUDIT_LOG: AUDIT_LOG,
            OAUTH_PROXY_ADMIN_BIND: `127.0.0.1:${opsAdminPort}`,
            OAUTH_PROXY_ADMIN_TOKEN: ADMIN_TOKEN
        }
    });
    world.ops.adminUrl = `http://127.0.0.1:${opsAdminPort}`;
    // Client ID Metadata Documents (scenarios 9 and 10): an https host on
    // 127.0.0.1 with a test CA made for this run, and a fifth proxy (swap
    // mode, in front of the 2.x server) that trusts that CA and may fetch
    // documents from a loopback address.
    world.documents = await startDocumentHost();
    world.cimd = await startProxy({
        name: 'cimd',
        binary: BINARY,
        port: cimdPort,
        logDir: ARTIFACTS,
        env: {
            ...common,
            OAUTH_PROXY_MCP_UPSTREAM_URL: world.mcp2.url,
            OAUTH_PROXY_ENABLE_TOKEN_SWAP: 'true',
            OAUTH_PROXY_UPSTREAM_CLIENT_ID: 'mcp-proxy-cimd',
            OAUTH_PROXY_UPSTREAM_CLIENT_SECRET: secrets.cimd,
            OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT_AUTH_METHOD: 'client_secret_basic',
            OAUTH_PROXY_EXTRA_CA_FILE: world.documents.caFile,
            OAUTH_PROXY_CIMD_ALLOW_PRIVATE_NETWORKS: 'true'
        }
    });
    // The access policy (scenarios 11 and 12): a sixth proxy (swap mode, in
    // front of the 2.x server) that advertises `mcp:read mcp:write`, lets
    // `write_*` tools be called only with `mcp:write` (so its 401 names the
    // baseline: the advertised scopes that no tool rule names, `mcp:read`),
    // and lets only accounts with an email at alice's domain sign in.
    world.policy = await startProxy({
        name: 'policy',
        binary: BINARY,
        port: policyPort,
        logDir: ARTIFACTS,
        env: {
            ...common,
            OAUTH_PROXY_MCP_UPSTREAM_URL: world.mcp2.url,
            OAUTH_PROXY_ENABLE_TOKEN_SWAP: 'true',
            OAUTH_PROXY_UPSTREAM_CLIENT_ID: 'mcp-proxy-policy',
            OAUTH_PROXY_UPSTREAM_CLIENT_SECRET: secrets.policy,
            OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT_AUTH_METHOD: 'client_secret_basic',
            OAUTH_PROXY_SCOPES: POLICY_SCOPES.join(' '),
            OAUTH_PROXY_MCP_TOOL_SCOPES: POLICY_TOOL_SCOPES,
            OAUTH_PROXY_ALLOWED_USERS: POLICY_ALLOWED_USERS
        }
    });
    world.callbacks = await startCallbackListener();
    world.browser = await launchBrowser();
    console.log(
        `setup: upstream ${world.upstream.issuer}, MCP server ${world.mcp.url}, ` +
            `proxy swap ${world.swap.base}, proxy pass-through ${world.pass.base}, ` +
            `MCP server (SDK 2.x) ${world.mcp2.url} behind proxy ${world.v2.base}, ` +
            `proxy with audit trail and admin listener ${world.ops.base} (admin ${world.ops.adminUrl}), ` +
            `document host ${world.documents.origin} behind proxy ${world.cimd.base}, ` +
            `proxy with tool scopes and allowed users ${world.policy.base}, ` +
            `chromium ${world.browser.version()}`
    );
}

async function tearDown() {
    const steps = [
        () => world.browser?.close(),
        () => world.swap?.stop(),
        () => world.pass?.stop(),
        () => world.v2?.stop(),
        () => world.ops?.stop(),
        () => world.cimd?.stop(),
        () => world.policy?.stop(),
        () => world.documents?.close(),
        () => world.callbacks?.close(),
        () => world.mcp?.close(),
        () => world.mcp2?.close(),
        () => world.upstream?.close()
    ];
    for (const step of steps) {
        try {
            await withTimeout(Promise.resolve().then(step), 10000, 'tear-down step');
        } catch (e) {
            console.error(`tear-down: ${e.message}`);
        }
    }
}

/**
 * The browser part of a sign-in at `proxy`: opens the authorization URL `url`
 * and takes `decision` on our consent page, which is read first (`consent`,
 * null when the page was not shown) and then handed to `onConsentPage`;
 * `account` signs in at the upstream.
 */
async function inBrowser({ proxy, context, url, decision = 'approve', onConsentPage, account = ACCOUNT }) {
    let consent = null;
    const flow = await authorizeInBrowser({
        context,
        url,
        proxyOrigin: proxy.base,
        upstreamOrigin: world.upstream.issuer,
        callbackOrigin: world.callbacks.origin,
        decision,
        account,
        onConsentPage: async page => {
            consent = await readConsentPage(page);
            if (onConsentPage) await onConsentPage(page);
        }
    });
    return { flow, consent };
}

/**
 * A full interactive authorization through the SDK and the browser, approving
 * on our consent page. Returns the session, provider, what the browser saw and
 * the consent page as read.
 */
async function authorize({ proxy, context, label, name, authMethod, onConsentPage, provider }) {
    const redirectUrl = world.callbacks.redirectUrl(label);
    provider ??= new InMemoryOAuthProvider({ redirectUrl, clientMetadata: clientMetadata(name, redirectUrl, authMethod) });
    const session = new McpSession({ mcpUrl: proxy.mcpUrl, provider });
    const authUrl = await session.start();
    expect(authUrl, 'the SDK connected without authorization: the proxy did not ask for a token');
    const { flow, consent } = await inBrowser({ proxy, context, url: authUrl, onConsentPage });
    const params = await world.callbacks.wait(provider.lastState);
    expect(
        typeof params.code === 'string' && !params.error,
        `authorization response has no code: ${JSON.stringify(params)}`
    );
    await session.complete(params.code);
    return { session, provider, flow, authUrl, params, consent };
}

async function readConsentPage(page) {
    const text = async sel => (await page.locator(sel).first().innerText()).trim();
    return {
        title: await page.title(),
        clientName: await text('.client-name'),
        host: await text('.host'),
        uri: await text('code.uri'),
        scopes: (await page.locator('ul.scopes li').allInnerTexts()).map(s => s.trim()),
        rememberChecked: await page.locator('input[name="remember"]').isChecked(),
        hasTransaction: (await page.locator('form.decision input[name="transaction_id"]').count()) === 1,
        hasCsrf: (await page.locator('form.decision input[name="csrf_token"]').count()) === 1
    };
}

function checkConsentPage(seen, name, redirectUrl) {
    expect(seen, 'our consent page was not shown');
    expect(seen.clientName === name, `consent page shows client name "${seen.clientName}", expected "${name}"`);
    expect(seen.uri === redirectUrl, `consent page shows redirect URI "${seen.uri}", expected "${redirectUrl}"`);
    const host = new URL(redirectUrl).host;
    const hostname = new URL(redirectUrl).hostname;
    expect(
        seen.host === host || seen.host === hostname,
        `consent page shows redirect host "${seen.host}", expected "${host}"`
    );
    expect(seen.hasTransaction && seen.hasCsrf, 'consent form lacks transaction_id or csrf_token');
}

// ---------------------------------------------------------------- scenarios

async function scenario1() {
    const proxy = world.swap;
    const context = await newContext(world.browser);
    world.s1 = { context };

    // The unauthenticated request: 401 with the RFC 9728 pointer.
    const bare = await rawMcpPost(proxy.mcpUrl);
    expectChallenge(bare, proxy, 'request without a token');
    detail(`no token: 401, WWW-Authenticate: ${bare.www}`);

    const name = 'E2E Swap Client';
    const redirectUrl = world.callbacks.redirectUrl('swap');
    const { session, provider, flow, authUrl, params, consent } = await authorize({
        proxy,
        context,
        label: 'swap',
        name,
        onConsentPage: async page => {
            await page.screenshot({ path: join(ARTIFACTS, 'consent.png'), fullPage: true });
            // The same page on a phone-sized screen.
            const size = page.viewportSize();
            await page.setViewportSize({ width: 390, height: 844 });
            await page.screenshot({ path: join(ARTIFACTS, 'consent-mobile.png'), fullPage: true });
            await page.setViewportSize(size);
        }
    });
    world.s1 = { context, session, provider };

    // What the SDK did by itself before the browser opened.
    const log = session.fetchLog.map(e => `${e.method} ${new URL(e.url).pathname} ${e.status}`);
    detail(`SDK requests: ${log.join(' → ')}`);
    const find = (method, path, status) =>
        session.fetchLog.findIndex(
            e => e.method === method && new URL(e.url).pathname === path && (status === undefined || e.status === status)
        );
    const i401 = find('POST', '/mcp', 401);
    const iPrm = session.fetchLog.findIndex(
        e => new URL(e.url).pathname.startsWith('/.well-known/oauth-protected-resource') && e.status === 200
    );
    const iAs = session.fetchLog.findIndex(
        e =>
            /^\/\.well-known\/(oauth-authorization-server|openid-configuration)/.test(new URL(e.url).pathname) &&
            e.status === 200
    );
    const iReg = find('POST', '/register', 201);
    const iTok = find('POST', '/token', 200);
    expect(i401 === 0, 'the first SDK request was not a 401 from /mcp');
    expect(iPrm > i401, 'the SDK did not fetch the protected resource metadata after the 401');
    expect(iAs > iPrm, 'the SDK did not fetch the authorization server metadata');
    expect(iReg > iAs, 'the SDK did not register dynamically (no 201 from /register)');
    expect(iTok > iReg, 'the SDK did not exchange the code at /token');

    // The authorization request the SDK built.
    const q = authUrl.searchParams;
    expect(authUrl.origin === proxy.base && authUrl.pathname === '/authorize', `authorization URL is ${authUrl}`);
    expect(q.get('code_challenge_method') === 'S256' && q.get('code_challenge'), 'no S256 PKCE challenge');
    expect(q.get('state') === provider.lastState, 'state in the authorization URL is not the provider\'s');
    expect(q.get('client_id') === provider.clientInformation()?.client_id, 'client_id is not the registered one');
    detail(
        `authorization URL: client_id=${short(q.get('client_id'), 12)} scope="${q.get('scope')}" resource=${q.get('resource')} PKCE S256`
    );

    // Our consent page, then the upstream.
    checkConsentPage(consent, name, redirectUrl);
    detail(
        `consent page: "${consent.title}", client "${consent.clientName}", host ${consent.host}, ` +
            `URI ${consent.uri}, scopes [${consent.scopes.join(', ')}], remember ${consent.rememberChecked ? 'checked' : 'unchecked'}`
    );
    const expectedSteps = ['proxy-consent', 'upstream-login', 'upstream-consent', 'client-callback'];
    expect(
        flow.steps.join(',') === expectedSteps.join(','),
        `browser steps were ${flow.steps.join(' > ')}, expected ${expectedSteps.join(' > ')}`
    );
    detail(`browser: ${flow.steps.join(' > ')}`);
    expect(params.state === provider.lastState, 'callback state does not match');
    detail(`callback: code ${short(params.code, 8)}, state matches, iss=${params.iss ?? '(none)'}`);

    // Tokens: the proxy's own JWTs.
    const tokens = provider.tokens();
    expect(tokens?.access_token && tokens?.refresh_token, 'the SDK holds no access + refresh token');
    const claims = jwtClaims(tokens.access_token);
    expect(claims, 'the access token is not a JWT (swap mode issues the proxy\'s JWTs)');
    expect(claims.iss === proxy.base, `access token iss ${claims.iss}`);
    expect(audList(claims.aud).includes(proxy.mcpUrl), `access token aud ${JSON.stringify(claims.aud)}`);
    expect(claims.sub === ACCOUNT.sub, `access token sub "${claims.sub}", expected "${ACCOUNT.sub}"`);
    expect(claims.client_id === provider.clientInformation().client_id, 'access token client_id');
    expect(claims.token_use === 'access', `access token token_use ${claims.token_use}`);
    detail(
        `tokens: access JWT (alg ${decodeProtectedHeader(tokens.access_token).alg}, sub ${claims.sub}, ` +
            `aud ${claims.aud}, exp in ${claims.exp - Math.floor(Date.now() / 1000)} s), refresh token ${short(tokens.refresh_token, 10)}`
    );

    // MCP through the proxy.
    const tools = await session.listTools();
    const names = tools.tools.map(t => t.name);
    expect(names.includes('whoami'), `tools/list: ${names.join(', ')}`);
    const seenBefore = world.mcp.received.length;
    const who = await session.whoami();
    expect(who.sub === ACCOUNT.sub, `whoami: ${JSON.stringify(who)}`);
    expect(who.bearer && who.bearer !== tokens.access_token, 'the MCP server received the proxy\'s access token');
    expect(!isProxyJwt(who.bearer, proxy.base), 'the MCP server received a proxy JWT');
    detail(`tools/list: [${names.join(', ')}]; whoami: sub "${who.sub}" via upstream userinfo (${who.userinfo_status})`);
    detail(`bearer at the MCP server: ${short(who.bearer, 12)} (upstream token, not the proxy JWT)`);
    const leaked = world.mcp.received.slice(seenBefore).filter(r => {
        const b = /^Bearer\s+(\S+)/i.exec(r.authorization || '')?.[1];
        return !b || isProxyJwt(b, proxy.base);
    });
    expect(leaked.length === 0, `${leaked.length} request(s) reached the MCP server without the upstream token`);

    // The proxy authenticated to the upstream with client_secret_basic.
    const exchange = world.upstream.tokenRequests.filter(
        r => r.client_id === 'mcp-proxy-basic' && r.grant_type === 'authorization_code'
    );
    expect(exchange.length >= 1, 'the upstream saw no code exchange from the swap proxy');
    const last = exchange.at(-1);
    expect(
        last.basic_header && !last.secret_in_body && last.status === 200,
        `upstream code exchange: ${JSON.stringify(last)}`
    );
    detail('upstream code exchange used client_secret_basic (Authorization: Basic, no secret in body): 200');
}

async function scenario2() {
    const proxy = world.swap;
    let s = world.s1;
    if (!s?.session) {
        detail('scenario 1 left no session; authorizing afresh');
        const context = s?.context || (await newContext(world.browser));
        const r = await authorize({ proxy, context, label: 'refresh', name: 'E2E Refresh Client' });
        s = { context, session: r.session, provider: r.provider };
    }
    const { session, provider } = s;
    const before = provider.tokens();
    const claims = jwtClaims(before.access_token);
    const now = Math.floor(Date.now() / 1000);
    const expired = await new SignJWT({ ...claims, iat: now - 3720, exp: now - 120 })
        .setProtectedHeader(decodeProtectedHeader(before.access_token))
        .sign(JWT_KEY_BYTES);
    const refused = await rawMcpPost(proxy.mcpUrl, expired);
    expectChallenge(refused, proxy, 'expired access token');
    detail(`the access token, re-signed with exp in the past: 401 (${oneLine(refused.www).slice(0, 120)}…)`);

    provider.setTokens({ ...before, access_token: expired });
    const redirects = provider.redirects.length;
    const logStart = session.fetchLog.length;
    const who = await session.whoami();
    expect(who.sub === ACCOUNT.sub, `whoami after refresh: ${JSON.stringify(who)}`);
    const after = provider.tokens();
    const log = session.fetchLog.slice(logStart).map(e => `${e.method} ${new URL(e.url).pathname} ${e.status}`);
    detail(`SDK requests: ${log.join(' → ')}`);
    expect(provider.redirects.length === redirects, 'the SDK started a new browser authorization instead of refreshing');
    expect(provider.invalidations.length === 0, `the SDK invalidated credentials: ${provider.invalidations}`);
    expect(
        log.some(l => l === 'POST /token 200'),
        'the SDK did not refresh at /token'
    );
    expect(after.access_token !== expired && after.access_token !== before.access_token, 'no new access token');
    expect(after.refresh_token && after.refresh_token !== before.refresh_token, 'the refresh token did not rotate');
    const newClaims = jwtClaims(after.access_token);
    expect(newClaims?.sub === ACCOUNT.sub && newClaims.jti !== claims.jti, 'the new access token is not a fresh JWT for the user');
    detail(`refreshed: new access token jti ${short(newClaims.jti, 8)}, refresh token rotated; whoami → "${who.sub}"`);

    const clientInfo = provider.clientInformation();
    // Within the grace window (a retried refresh whose answer was lost), the
    // rotated-out token gets the same pair back.
    const retried = await tokenRequest(proxy.base, clientInfo, {
        grant_type: 'refresh_token',
        refresh_token: before.refresh_token
    });
    expect(
        retried.status === 200 &&
            retried.json?.access_token === after.access_token &&
            retried.json?.refresh_token === after.refresh_token,
        `rotated-out refresh token within the grace window: expected 200 with the same pair, got ${retried.status} ${oneLine(retried.text).slice(0, 200)}`
    );
    detail('rotated-out refresh token presented again at once (grace window): 200 with the same pair');

    // The rotated-out refresh token, after the grace window.
    await sleep(REFRESH_GRACE_MS + 1500);
    const reuse = await tokenRequest(proxy.base, clientInfo, {
        grant_type: 'refresh_token',
        refresh_token: before.refresh_token
    });
    expect(
        reuse.status === 400 && reuse.json?.error === 'invalid_grant',
        `rotated-out refresh token: expected 400 invalid_grant, got ${reuse.status} ${oneLine(reuse.text).slice(0, 200)}`
    );
    detail(`rotated-out refresh token presented ${(REFRESH_GRACE_MS + 1500) / 1000} s later: 400 invalid_grant`);
    // Reuse revokes the family: the successor is refused too.
    const successor = await tokenRequest(proxy.base, clientInfo, {
        grant_type: 'refresh_token',
        refresh_token: after.refresh_token
    });
    expect(
        successor.status === 400 && successor.json?.error === 'invalid_grant',
        `after reuse, the current refresh token: expected 400 invalid_grant (family revoked), got ${successor.status} ${oneLine(successor.text).slice(0, 200)}`
    );
    detail('after the reuse, the family is revoked: the current refresh token gets 400 invalid_grant too');
    const current = await rawMcpPost(proxy.mcpUrl, after.access_token);
    detail(`the current access token at /mcp after the family was revoked: ${current.status}`);
    await session.close();
}

async function scenario3() {
    const proxy = world.swap;
    const context = await newContext(world.browser);
    try {
        const name = 'E2E Deny Client';
        const redirectUrl = world.callbacks.redirectUrl('deny');
        const provider = new InMemoryOAuthProvider({ redirectUrl, clientMetadata: clientMetadata(name, redirectUrl) });
        const session = new McpSession({ mcpUrl: proxy.mcpUrl, provider });
        const authUrl = await session.start();
        expect(authUrl, 'no authorization URL');
        const { flow, consent } = await inBrowser({ proxy, context, url: authUrl, decision: 'deny' });
        checkConsentPage(consent, name, redirectUrl);
        expect(
            flow.steps.join(',') === 'proxy-consent,client-callback',
            `browser steps: ${flow.steps.join(' > ')} (a denial must not reach the upstream)`
        );
        const params = await world.callbacks.wait(provider.lastState);
        expect(params.error === 'access_denied', `error=${params.error}`);
        expect(!('code' in params), 'a code came back with the denial');
        expect(params.state === provider.lastState, `state ${params.state} is not the client's ${provider.lastState}`);
        const consentPost = flow.proxyResponses.find(r => new URL(r.url).pathname === '/consent');
        detail(
            `browser: ${flow.steps.join(' > ')}; POST /consent → ${consentPost?.status ?? '?'}; ` +
                `callback: error=${params.error}, state matches, no code, iss=${params.iss ?? '(none)'}, ` +
                `error_description="${params.error_description ?? ''}"`
        );
        expect(provider.tokens() === undefined, 'the client has tokens after a denial');
        await session.close();
    } finally {
        await context.close().catch(() => {});
    }
}

async function scenario4() {
    const proxy = world.pass;
    const context = await newContext(world.browser);
    try {
        const name = 'E2E Pass-through Client';
        const redirectUrl = world.callbacks.redirectUrl('passthrough');
        const seenBefore = world.mcp.received.length;
        const { session, provider, flow, consent } = await authorize({
            proxy,
            context,
            label: 'passthrough',
            name,
            authMethod: 'client_secret_post'
        });
        checkConsentPage(consent, name, redirectUrl);
        detail(`browser: ${flow.steps.join(' > ')}`);
        const tokens = provider.tokens();
        expect(tokens?.access_token, 'no access token');
        expect(!isProxyJwt(tokens.access_token, proxy.base), 'pass-through mode handed out a proxy JWT');
        detail(
            `client's token: ${short(tokens.access_token, 12)} (${jwtClaims(tokens.access_token) ? 'JWT' : 'opaque'}, from the upstream), ` +
                `refresh token ${tokens.refresh_token ? 'present' : 'absent'}`
        );
        const tools = await session.listTools();
        expect(tools.tools.some(t => t.name === 'whoami'), 'tools/list lacks whoami');
        const who = await session.whoami();
        expect(who.sub === ACCOUNT.sub, `whoami: ${JSON.stringify(who)}`);
        expect(who.bearer === tokens.access_token, 'the MCP server did not receive the client\'s own upstream token');
        detail(`whoami → "${who.sub}" with the client's own token (upstream userinfo ${who.userinfo_status})`);
        const seen = world.mcp.received.slice(seenBefore);
        expect(
            seen.every(r => r.authorization === `Bearer ${tokens.access_token}`),
            'a request reached the MCP server with another Authorization header'
        );
        const exchange = world.upstream.tokenRequests.filter(
            r => r.client_id === 'mcp-proxy-post' && r.grant_type === 'authorization_code'
        );
        expect(exchange.length >= 1, 'the upstream saw no code exchange from the pass-through proxy');
        const last = exchange.at(-1);
        expect(
            last.secret_in_body && !last.basic_header && last.status === 200,
            `upstream code exchange: ${JSON.stringify(last)}`
        );
        detail('upstream code exchange used client_secret_post (secret in the body, no Basic header): 200');

        // A refresh in pass-through mode goes upstream with the proxy's credentials.
        expect(tokens.refresh_token, 'pass-through mode handed out no refresh token');
        provider.setTokens({ ...tokens, access_token: 'no-longer-valid' });
        const upstreamBefore = world.upstream.tokenRequests.length;
        const redirects = provider.redirects.length;
        const who2 = await session.whoami();
        const after = provider.tokens();
        expect(provider.redirects.length === redirects, 'the SDK started a new browser authorization instead of refreshing');
        expect(who2.sub === ACCOUNT.sub, `whoami after refresh: ${JSON.stringify(who2)}`);
        expect(after.access_token !== tokens.access_token, 'no new access token after the refresh');
        expect(who2.bearer === after.access_token, 'the MCP server did not receive the refreshed upstream token');
        const refresh = world.upstream.tokenRequests
            .slice(upstreamBefore)
            .filter(r => r.client_id === 'mcp-proxy-post' && r.grant_type === 'refresh_token');
        expect(
            refresh.length === 1 && refresh[0].secret_in_body && !refresh[0].basic_header && refresh[0].status === 200,
            `upstream refresh: ${JSON.stringify(refresh)}`
        );
        detail(
            `refresh: the SDK refreshed on 401; the proxy refreshed upstream with client_secret_post (200); ` +
                `whoami → "${who2.sub}" with the new upstream token ${short(after.access_token, 12)}`
        );
        await session.close();
    } finally {
        await context.close().catch(() => {});
    }
}

async function scenario5() {
    const proxy = world.swap;
    const context = await newContext(world.browser);
    try {
        // First authorization of client X: our consent page, approved with "remember".
        const nameX = 'E2E Remember Client X';
        const redirectX = world.callbacks.redirectUrl('remember-x');
        const first = await authorize({ proxy, context, label: 'remember-x', name: nameX });
        const consentX = first.consent;
        checkConsentPage(consentX, nameX, redirectX);
        expect(consentX.rememberChecked, '"remember" is not checked by default');
        expect((await first.session.whoami()).sub === ACCOUNT.sub, 'whoami after the first authorization');
        detail(`client X, first authorization: ${first.flow.steps.join(' > ')}`);
        await first.session.close();

        // Second authorization for the same client in the same browser.
        const providerX2 = new InMemoryOAuthProvider({
            redirectUrl: redirectX,
            clientMetadata: clientMetadata(nameX, redirectX),
            clientInformation: first.provider.clientInformation()
        });
        const second = await authorize({ proxy, context, label: 'remember-x', name: nameX, provider: providerX2 });
        expect(
            !second.session.fetchLog.some(e => new URL(e.url).pathname === '/register'),
            'the second authorization registered a new client'
        );
        expect(
            !second.flow.steps.includes('proxy-consent'),
            `our consent page was shown again: ${second.flow.steps.join(' > ')}`
        );
        const authorizeHop = second.flow.proxyResponses.find(r => new URL(r.url).pathname === '/authorize');
        expect(authorizeHop?.status === 302 || authorizeHop?.status === 303, `GET /authorize answered ${authorizeHop?.status}`);
        expect((await second.session.whoami()).sub === ACCOUNT.sub, 'whoami after the second authorization');
        detail(
            `client X, second authorization: GET /authorize → ${authorizeHop.status} straight to the upstream; ` +
                `${second.flow.steps.join(' > ')}`
        );
        await second.session.close();

        // Another client in the same browser sees the page again.
        const nameY = 'E2E Remember Client Y';
        const redirectY = world.callbacks.redirectUrl('remember-y');
        const third = await authorize({ proxy, context, label: 'remember-y', name: nameY });
        const consentY = third.consent;
        checkConsentPage(consentY, nameY, redirectY);
        expect(
            third.provider.clientInformation().client_id !== first.provider.clientInformation().client_id,
            'client Y got client X\'s id'
        );
        expect((await third.session.whoami()).sub === ACCOUNT.sub, 'whoami for client Y');
        detail(`client Y in the same browser: ${third.flow.steps.join(' > ')}`);
        await third.session.close();
    } finally {
        await context.close().catch(() => {});
    }
}

async function scenario6() {
    const proxy = world.swap;
    const context = await newContext(world.browser);
    try {
        const { session, provider } = await authorize({ proxy, context, label: 'negative', name: 'E2E Negative Client' });
        const valid = provider.tokens().access_token;
        const header = decodeProtectedHeader(valid);
        const claims = jwtClaims(valid);
        const now = Math.floor(Date.now() / 1000);
        const b64 = obj => Buffer.from(JSON.stringify(obj)).toString('base64url');
        const [h, , sig] = valid.split('.');

        const control = await rawMcpPost(proxy.mcpUrl, valid);
        expect(control.status === 200, `the valid token got ${control.status} (control request)`);
        detail('control: the valid access token → 200');

        const cases = [
            ['tampered payload (sub changed, signature kept)', `${h}.${b64({ ...claims, sub: 'mallory' })}.${sig}`],
            ['alg=none', `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`],
            [
                'expired (right key, iss and aud)',
                await new SignJWT({ ...claims, iat: now - 7200, exp: now - 3600 }).setProtectedHeader(header).sign(JWT_KEY_BYTES)
            ],
            [
                'foreign audience (right key)',
                await new SignJWT({ ...claims, aud: 'https://other-resource.example/mcp' })
                    .setProtectedHeader(header)
                    .sign(JWT_KEY_BYTES)
            ],
            ['refresh token used as access token', provider.tokens().refresh_token],
            ['garbage', 'not-a-token']
        ];
        for (const [what, token] of cases) {
            const r = await rawMcpPost(proxy.mcpUrl, token);
            expectChallenge(r, proxy, what);
            expect(/error="invalid_token"/.test(r.www), `${what}: WWW-Authenticate lacks error="invalid_token": ${r.www}`);
            const description = /error_description="([^"]*)"/.exec(r.www)?.[1] ?? '';
            detail(`${what}: 401 invalid_token (${description})`);
        }
        await session.close();

        // An error page: an unknown client at /authorize.
        const page = await context.newPage();
        try {
            const q = new URLSearchParams({
                response_type: 'code',
                client_id: 'no-such-client',
                redirect_uri: world.callbacks.redirectUrl('unknown'),
                state: 'xyz',
                code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
                code_challenge_method: 'S256'
            });
            const res = await page.goto(`${proxy.base}/authorize?${q}`, { waitUntil: 'load' });
            expect(res.status() === 400, `unknown client at /authorize: ${res.status()}`);
            expect(/text\/html/.test(res.headers()['content-type'] || ''), 'the error page is not HTML');
            expect(new URL(page.url()).origin === proxy.base, 'the unknown client was redirected away');
            const heading = (await page.locator('h1').first().innerText()).trim();
            await page.screenshot({ path: join(ARTIFACTS, 'error.png'), fullPage: true });
            detail(`unknown client at /authorize: 400 HTML error page "${heading}" (no redirect)`);
        } finally {
            await page.close().catch(() => {});
        }
    } finally {
        await context.close().catch(() => {});
    }
}

async function scenario7() {
    const proxy = world.v2;
    const context = await newContext(world.browser);
    let session;
    try {
        // Sign-in: the 2.x SDK's discovery, registration, PKCE and code
        // exchange (it checks the callback's `iss`, RFC 9207), our consent
        // page and the upstream's in the browser.
        const name = 'E2E SDK 2.x Client';
        const redirectUrl = world.callbacks.redirectUrl('v2');
        const provider = new InMemoryOAuthProviderV2({ redirectUrl, clientMetadata: clientMetadata(name, redirectUrl) });
        session = new McpSessionV2({ mcpUrl: proxy.mcpUrl, provider });
        const authUrl = await session.start();
        expect(authUrl, 'the 2.x SDK connected without authorization: the proxy did not ask for a token');
        const { flow, consent } = await inBrowser({ proxy, context, url: authUrl });
        checkConsentPage(consent, name, redirectUrl);
        const params = await world.callbacks.wait(provider.lastState);
        expect(typeof params.code === 'string' && !params.error, `authorization response: ${JSON.stringify(params)}`);
        expect(params.iss === proxy.base, `the authorization response's iss is ${params.iss}, expected ${proxy.base}`);
        await session.complete(params);
        const log = session.fetchLog.map(e => `${e.method} ${new URL(e.url).pathname} ${e.status}`);
        detail(`SDK 2.x requests: ${log.join(' → ')}`);
        const step = (method, path, status) =>
            session.fetchLog.findIndex(e => e.method === method && new URL(e.url).pathname === path && e.status === status);
        const iReg = step('POST', '/register', 201);
        const iTok = step('POST', '/token', 200);
        expect(step('POST', '/mcp', 401) === 0, 'the first request of the 2.x SDK was not a 401 from /mcp');
        expect(iReg > 0 && iTok > iReg, 'the 2.x SDK did not register and then exchange the code');
        const advertised = provider.discoveryState()?.authorizationServerMetadata?.client_id_metadata_document_supported;
        expect(
            advertised === true,
            `the metadata the 2.x SDK read says client_id_metadata_document_supported: ${advertised}, expected true`
        );
        detail('the metadata advertised client_id_metadata_document_supported: true; with no clientMetadataUrl the SDK registered (DCR)');
        detail(`browser: ${flow.steps.join(' > ')}; callback iss=${params.iss}`);
        const negotiated = session.negotiatedVersion();
        expect(negotiated === PROTOCOL_VERSION, `negotiated protocol ${negotiated}, expected ${PROTOCOL_VERSION}`);
        const tokens = provider.tokens();
        expect(isProxyJwt(tokens?.access_token, proxy.base), 'swap mode handed the 2.x client no proxy JWT');
        expect(tokens.refresh_token, 'no refresh token');
        detail(`negotiated ${negotiated}; tokens: proxy JWT + refresh token`);

        // tools/list: the SDK keeps a tool only when its x-mcp-header declaration is valid.
        const tools = await session.listTools();
        const names = tools.tools.map(t => t.name);
        const lookup = tools.tools.find(t => t.name === 'lookup');
        expect(names.includes('whoami') && lookup, `tools/list: [${names.join(', ')}]`);
        const declared = lookup.inputSchema?.properties?.region?.['x-mcp-header'];
        expect(declared === PARAM_HEADER, `lookup's region declares x-mcp-header ${declared}`);
        const who = await session.callJson('whoami');
        expect(who.sub === ACCOUNT.sub, `whoami: ${JSON.stringify(who)}`);
        expect(who.bearer && !isProxyJwt(who.bearer, proxy.base), 'the MCP server received the proxy\'s JWT');
        detail(`tools/list: [${names.join(', ')}] (lookup.region: x-mcp-header ${declared}); whoami → "${who.sub}" with the upstream token`);

        // Refresh: the access token re-signed as expired; the SDK refreshes by itself.
        const claims = jwtClaims(tokens.access_token);
        const now = Math.floor(Date.now() / 1000);
        const expired = await new SignJWT({ ...claims, iat: now - 3720, exp: now - 120 })
            .setProtectedHeader(decodeProtectedHeader(tokens.access_token))
            .sign(JWT_KEY_BYTES);
        provider.setTokens({ ...tokens, access_token: expired });
        const redirects = provider.redirects.length;
        const refreshesBefore = session.fetchLog.filter(e => new URL(e.url).pathname === '/token').length;
        const who2 = await session.callJson('whoami');
        const after = provider.tokens();
        expect(provider.redirects.length === redirects, 'the 2.x SDK started a new browser authorization instead of refreshing');
        const refreshes = session.fetchLog.filter(e => new URL(e.url).pathname === '/token').slice(refreshesBefore);
        expect(refreshes.length === 1 && refreshes[0].status === 200, `refresh requests: ${JSON.stringify(refreshes)}`);
        expect(who2.sub === ACCOUNT.sub, `whoami after the refresh: ${JSON.stringify(who2)}`);
        expect(after.access_token !== expired && isProxyJwt(after.access_token, proxy.base), 'no new access token');
        expect(after.refresh_token && after.refresh_token !== tokens.refresh_token, 'the refresh token did not rotate');
        detail('refresh: 401 on the expired token → POST /token 200 (no browser) → whoami works; refresh token rotated');

        // The x-mcp-header tool through the gateway: the client sends
        // Mcp-Param-Region, the proxy must forward it (an intermediary MUST
        // forward Mcp-Param-* headers), the SDK's server refuses the call
        // without it.
        const region = 'eu-west-1';
        const sentBefore = session.fetchLog.length;
        const seenBefore = world.mcp2.received.length;
        const headerName = `mcp-param-${PARAM_HEADER.toLowerCase()}`;
        let answer;
        try {
            answer = await session.callJson('lookup', { region });
        } catch (e) {
            const sent = session.fetchLog.slice(sentBefore).find(r => r.mcp['mcp-method'] === 'tools/call');
            const seen = world.mcp2.received.slice(seenBefore).find(r => r.mcp_method === 'tools/call');
            throw new Error(
                `tools/call lookup failed: ${oneLine(e.message).slice(0, 300)}; the client sent ` +
                    `Mcp-Param-${PARAM_HEADER}: ${sent?.mcp[headerName] ?? '(none)'} (proxy answered ${sent?.status}); ` +
                    `the MCP server got ${seen ? `Mcp-Param-${PARAM_HEADER}: ${seen.mcp_param_region ?? '(none)'} and answered ${seen.status}` : 'no tools/call'}`
            );
        }
        const sent = session.fetchLog.slice(sentBefore).find(r => r.mcp['mcp-method'] === 'tools/call');
        expect(sent?.mcp[headerName] === region, `the client sent Mcp-Param-${PARAM_HEADER}: ${sent?.mcp[headerName]}`);
        expect(answer.region === region, `lookup answered ${JSON.stringify(answer)}`);
        expect(
            answer.mcp_param_region === region,
            `the MCP server saw Mcp-Param-${PARAM_HEADER}: ${answer.mcp_param_region ?? '(none)'}, expected ${region}`
        );
        expect(
            answer.mcp_method === 'tools/call' && answer.mcp_name === 'lookup' && answer.protocol_version === PROTOCOL_VERSION,
            `the MCP server saw Mcp-Method ${answer.mcp_method}, Mcp-Name ${answer.mcp_name}, MCP-Protocol-Version ${answer.protocol_version}`
        );
        detail(
            `lookup(region=${region}): the MCP server saw Mcp-Param-${PARAM_HEADER}: ${answer.mcp_param_region}, ` +
                `Mcp-Method ${answer.mcp_method}, Mcp-Name ${answer.mcp_name}, MCP-Protocol-Version ${answer.protocol_version}`
        );
    } finally {
        await session?.close();
        await context.close().catch(() => {});
    }
}

/**
 * Runs the proxy binary as a command (`admin ...`, `audit verify ...`) in an
 * empty working directory (no `.env`), with only PATH and `env`; resolves
 * with its exit code and output (killed after 30 s).
 */
function runBinary(args, env = {}) {
    const cwd = mkdtempSync(join(tmpdir(), 'e2e-cli-'));
    return new Promise((resolvePromise, reject) => {
        const child = spawn(BINARY, args, {
            cwd,
            env: { PATH: process.env.PATH || '/usr/bin:/bin', ...env },
            stdio: ['ignore', 'pipe', 'pipe']
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', d => (stdout += d));
        child.stderr.on('data', d => (stderr += d));
        const timer = setTimeout(() => child.kill('SIGKILL'), 30000);
        child.on('error', reject);
        child.on('close', (code, signal) => {
            clearTimeout(timer);
            rmSync(cwd, { recursive: true, force: true });
            resolvePromise({ code, signal, stdout, stderr });
        });
    });
}

/** The audit trail's events, one JSON object per line. */
function readAudit(path) {
    expect(existsSync(path), `no audit file at ${path}`);
    const lines = readFileSync(path, 'utf8').split('\n').filter(l => l.trim() !== '');
    return lines.map((line, i) => {
        try {
            return JSON.parse(line);
        } catch {
            throw new Error(`audit line ${i + 1} is not JSON: ${line.slice(0, 200)}`);
        }
    });
}

async function scenario8() {
    const proxy = world.ops;
    const context = await newContext(world.browser);
    let session;
    try {
        // Sign-in through the SDK and the browser, then MCP calls.
        const name = 'E2E Ops Client';
        const a = await authorize({ proxy, context, label: 'ops', name });
        session = a.session;
        const { provider } = a;
        checkConsentPage(a.consent, name, world.callbacks.redirectUrl('ops'));
        const clientId = provider.clientInformation().client_id;
        const first = provider.tokens();
        const subject = jwtClaims(first.access_token)?.sub;
        expect(subject === ACCOUNT.sub, `access token sub ${subject}`);
        const tools = await session.listTools();
        expect(tools.tools.some(t => t.name === 'whoami'), 'tools/list lacks whoami');
        expect((await session.whoami()).sub === ACCOUNT.sub, 'whoami');
        detail(`signed in (${a.flow.steps.join(' > ')}); tools/list and whoami through the proxy`);

        // A refresh: the access token re-signed as expired; the SDK refreshes by itself.
        const claims = jwtClaims(first.access_token);
        const now = Math.floor(Date.now() / 1000);
        const expired = await new SignJWT({ ...claims, iat: now - 3720, exp: now - 120 })
            .setProtectedHeader(decodeProtectedHeader(first.access_token))
            .sign(JWT_KEY_BYTES);
        provider.setTokens({ ...first, access_token: expired });
        const logStart = session.fetchLog.length;
        expect((await session.whoami()).sub === ACCOUNT.sub, 'whoami after the refresh');
        const refreshed = provider.tokens();
        expect(
            session.fetchLog.slice(logStart).some(e => e.method === 'POST' && new URL(e.url).pathname === '/token' && e.status === 200),
            'the SDK did not refresh at /token'
        );
        expect(refreshed.refresh_token && refreshed.refresh_token !== first.refresh_token, 'the refresh token did not rotate');
        detail('refresh: 401 on the expired token → POST /token 200 → whoami works; refresh token rotated');

        // The kill switch, from the command line: every grant of the user.
        const adminEnv = { OAUTH_PROXY_ADMIN_URL: proxy.adminUrl, OAUTH_PROXY_ADMIN_TOKEN: ADMIN_TOKEN };
        const listed = await runBinary(['admin', 'grants', 'list', '--sub', subject, '--json'], adminEnv);
        expect(
            listed.code === 0,
            `admin grants list --sub exited ${listed.code}: ${oneLine(listed.stderr || listed.stdout)}`
        );
        const grants = JSON.parse(listed.stdout).items;
        expect(
            grants.length >= 1 && grants.every(g => g.subject === subject) && grants.some(g => g.client_id === clientId),
            `admin grants list --sub ${subject}: ${oneLine(listed.stdout)}`
        );
        detail(`mcp-oauth-proxy admin grants list --sub ${subject}: ${grants.length} grant(s), client ${short(clientId, 12)}`);
        const revoked = await runBinary(['admin', 'grants', 'revoke', '--sub', subject], adminEnv);
        expect(
            revoked.code === 0,
            `admin grants revoke --sub exited ${revoked.code}: ${oneLine(revoked.stderr || revoked.stdout)}`
        );
        expect(/revoked [1-9]\d* grants/.test(revoked.stdout), `admin grants revoke --sub said: ${oneLine(revoked.stdout)}`);
        const output = `${listed.stdout}${listed.stderr}${revoked.stdout}${revoked.stderr}`;
        expect(!output.includes(ADMIN_TOKEN), 'the admin CLI printed its token');
        detail(`mcp-oauth-proxy admin grants revoke --sub ${subject}: "${oneLine(revoked.stdout)}" (exit 0)`);

        // The client's next MCP call: 401, and its refresh token is dead too.
        const after = provider.tokens();
        const refused = await rawMcpPost(proxy.mcpUrl, after.access_token);
        expectChallenge(refused, proxy, 'the revoked user\'s access token');
        const refresh = await tokenRequest(proxy.base, provider.clientInformation(), {
            grant_type: 'refresh_token',
            refresh_token: after.refresh_token
        });
        expect(
            refresh.status === 400 && refresh.json?.error === 'invalid_grant',
            `the revoked user's refresh token: ${refresh.status} ${oneLine(refresh.text).slice(0, 200)}`
        );
        let sdkError = null;
        try {
            await session.whoami();
        } catch (e) {
            sdkError = e;
        }
        expect(sdkError, 'the SDK\'s MCP call succeeded after the user was revoked');
        detail(`after the revoke: /mcp with the access token → 401; refresh → 400 invalid_grant; the SDK's call fails (${oneLine(sdkError.message).slice(0, 80)})`);
        await session.close();
        session = undefined;

        // Stop the proxy: the audit writer flushes and closes the file.
        await proxy.stop();
        const events = readAudit(AUDIT_LOG);
        const kinds = events.map(e => e.event);
        detail(`audit trail: ${events.length} lines: ${[...new Set(kinds)].join(', ')}`);
        // The first event of `kind` passing `test` after line index `from`.
        const find = (kind, test = () => true, from = -1) =>
            events.findIndex((e, i) => i > from && e.event === kind && test(e));
        const grantIds = grants.map(g => g.grant_id);
        // Steps in order; each found after the one before (code.redeemed and
        // token.issued come from one /token request, in either order).
        const story = [
            [['authorization.started', e => e.client_id === clientId]],
            [['consent.approved', e => e.client_id === clientId]],
            [['upstream.sign_in', e => e.subject === subject]],
            [['code.issued', e => e.client_id === clientId]],
            [
                ['code.redeemed', e => e.client_id === clientId],
                ['token.issued', e => e.client_id === clientId && e.subject === subject]
            ],
            [['mcp.request', e => e.subject === subject && e.mcp?.name === 'whoami' && (e.mcp?.status ?? e.status) === 200]],
            [['token.refreshed', e => e.client_id === clientId]],
            [['grant.revoked', e => e.revoked_by === 'admin' && (e.subject === subject || grantIds.includes(e.grant_id))]],
            [['request.refused', e => e.status === 401]]
        ];
        let at = -1;
        const seen = [];
        for (const step of story) {
            let last = at;
            for (const [kind, test] of step) {
                const i = find(kind, test, at);
                expect(
                    i >= 0,
                    `the audit trail has no ${kind} event for this flow after line ${at + 1} ` +
                        `(events: ${[...new Set(kinds)].join(', ')})`
                );
                seen.push(`${kind}@${i + 1}`);
                last = Math.max(last, i);
            }
            at = last;
        }
        expect(
            events.some(e => e.event === 'mcp.request' && e.mcp?.method === 'tools/list'),
            'no mcp.request for tools/list'
        );
        detail(`the story, in order (event@line): ${seen.join(' → ')}`);

        // Never a token, code, secret or verifier in the audit trail.
        const text = readFileSync(AUDIT_LOG, 'utf8');
        const secrets = [
            ...provider.savedTokens.flatMap(t => [t.access_token, t.refresh_token]),
            after.access_token,
            a.params.code,
            provider.clientInformation().client_secret,
            ADMIN_TOKEN,
            world.secrets.ops,
            JWT_SIGNING_KEY,
            ENCRYPTION_KEY,
            CONSENT_SIGNING_KEY
        ].filter(s => typeof s === 'string' && s.length >= 8);
        const leaked = secrets.filter(s => text.includes(s));
        expect(leaked.length === 0, `${leaked.length} token(s)/secret(s) in the audit trail: ${leaked.map(s => short(s, 10)).join(', ')}`);
        detail(`none of the ${secrets.length} tokens, codes and secrets seen appears in the audit trail`);

        // The chain verifies; an edited copy fails naming the edited line.
        const verified = await runBinary(['audit', 'verify', AUDIT_LOG], world.opsEnv);
        expect(verified.code === 0, `audit verify exited ${verified.code}: ${oneLine(verified.stderr || verified.stdout)}`);
        const summary = verified.stdout + verified.stderr;
        expect(
            /checkpoints? verified/.test(summary) && !/NOT checked/.test(summary),
            `audit verify did not check the signed checkpoints: ${oneLine(summary)}`
        );
        detail(`mcp-oauth-proxy audit verify: exit 0 (${oneLine(verified.stdout || verified.stderr).slice(0, 120)})`);
        const lines = text.split('\n');
        const editAt = Math.min(2, lines.length - 2); // the third line
        const original = lines[editAt];
        let edited = original.replace('"outcome":"success"', '"outcome":"failure"');
        if (edited === original) edited = original.replace(/"request_id":"/, '"request_id":"x');
        expect(edited !== original, `cannot edit audit line ${editAt + 1}: ${original.slice(0, 120)}`);
        const copy = join(ARTIFACTS, 'audit-ops-edited.jsonl');
        copyFileSync(AUDIT_LOG, copy);
        writeFileSync(copy, [...lines.slice(0, editAt), edited, ...lines.slice(editAt + 1)].join('\n'));
        const broken = await runBinary(['audit', 'verify', copy]);
        const said = `${broken.stdout}${broken.stderr}`;
        expect(broken.code === 1, `audit verify of the edited copy exited ${broken.code}: ${oneLine(said)}`);
        const lineNo = editAt + 1;
        expect(
            new RegExp(`line ${lineNo}\\b|:${lineNo}\\b`).test(said),
            `audit verify of the copy edited at line ${lineNo} did not name that line: ${oneLine(said)}`
        );
        detail(`one line edited in a copy (line ${lineNo}): audit verify exits 1: ${oneLine(said).slice(0, 160)}`);
    } finally {
        await session?.close();
        await context.close().catch(() => {});
    }
}


/**
 * A sign-in of the 2.x SDK through the browser: start (discovery, then a
 * document client id or a registration), the browser on our consent page
 * and the upstream's, the code exchange. Returns what each part saw; the
 * consent page's text is read as the user sees it.
 */
async function signInV2({ proxy, context, label, name, clientMetadataUrl }) {
    const redirectUrl = world.callbacks.redirectUrl(label);
    const provider = new InMemoryOAuthProviderV2({
        redirectUrl,
        clientMetadata: clientMetadata(name, redirectUrl, 'none'),
        clientMetadataUrl
    });
    const session = new McpSessionV2({ mcpUrl: proxy.mcpUrl, provider });
    try {
        const authUrl = await session.start();
        expect(authUrl, 'the 2.x SDK connected without authorization: the proxy did not ask for a token');
        let consentText = null;
        const flow = await authorizeInBrowser({
            context,
            url: authUrl,
            proxyOrigin: proxy.base,
            upstreamOrigin: world.upstream.issuer,
            callbackOrigin: world.callbacks.origin,
            onConsentPage: async page => {
                consentText = (await page.locator('body').innerText()).replace(/\s+/g, ' ').trim();
                await page.screenshot({ path: join(ARTIFACTS, `consent-${label}.png`), fullPage: true });
            }
        });
        const params = await world.callbacks.wait(provider.lastState);
        expect(typeof params.code === 'string' && !params.error, `authorization response: ${JSON.stringify(params)}`);
        expect(params.iss === proxy.base, `the authorization response's iss is ${params.iss}, expected ${proxy.base}`);
        await session.complete(params);
        return { session, provider, authUrl, flow, params, consentText, redirectUrl };
    } catch (e) {
        await session.close();
        throw e;
    }
}

/** `whoami` through the gateway with the 2.x session: the user's subject, with the upstream token. */
async function whoamiV2(session, proxy) {
    const who = await session.callJson('whoami');
    expect(who.sub === ACCOUNT.sub, `whoami: ${JSON.stringify(who)}`);
    expect(who.bearer && !isProxyJwt(who.bearer, proxy.base), 'the MCP server received the proxy\'s JWT');
    return who;
}

const CIMD_PATH = '/oauth/e2e-client-metadata.json';
const CIMD_NAME = 'E2E SDK 2.x Document Client';

async function scenario9() {
    const proxy = world.cimd;
    const host = world.documents;
    const documentUrl = host.url(CIMD_PATH);
    // The client's document, as its vendor publishes it: a portless loopback
    // redirect URI (as Claude Code's does); the SDK's listener has a port
    // chosen at run time (RFC 8252 §7.3).
    const callbackUrl = new URL(world.callbacks.redirectUrl('cimd'));
    const documentRedirect = `http://127.0.0.1${callbackUrl.pathname}`;
    host.serveJson(CIMD_PATH, {
        client_id: documentUrl,
        client_name: CIMD_NAME,
        client_uri: host.origin,
        redirect_uris: [documentRedirect],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none'
    });
    const hitsBefore = host.hits(CIMD_PATH);
    const context = await newContext(world.browser);
    let session;
    try {
        const a = await signInV2({ proxy, context, label: 'cimd', name: CIMD_NAME, clientMetadataUrl: documentUrl });
        session = a.session;
        const { provider, authUrl, flow, params, consentText } = a;
        const log = session.fetchLog.map(e => `${e.method} ${new URL(e.url).pathname} ${e.status}`);
        detail(`SDK 2.x requests: ${log.join(' → ')}`);

        // Discovery said documents are welcome; the SDK used its URL and never registered.
        const advertised = provider.discoveryState()?.authorizationServerMetadata?.client_id_metadata_document_supported;
        expect(advertised === true, `the metadata says client_id_metadata_document_supported: ${advertised}`);
        const registrations = session.fetchLog.filter(e => new URL(e.url).pathname === '/register');
        expect(registrations.length === 0, `the SDK made ${registrations.length} request(s) to /register`);
        expect(provider.clientInformation()?.client_id === documentUrl, `the SDK's client_id is ${provider.clientInformation()?.client_id}`);
        expect(authUrl.searchParams.get('client_id') === documentUrl, `the authorization URL's client_id is ${authUrl.searchParams.get('client_id')}`);
        const redirectUri = authUrl.searchParams.get('redirect_uri');
        expect(
            redirectUri === callbackUrl.href && new URL(redirectUri).port !== '',
            `the authorization URL's redirect_uri is ${redirectUri}, expected ${callbackUrl.href}`
        );
        detail(`metadata: client_id_metadata_document_supported: true; no /register request; client_id=${documentUrl}`);
        detail(`redirect_uri ${redirectUri} (the document lists ${documentRedirect}: loopback, any port)`);

        // The proxy fetched the document over https from the test CA's host.
        const fetched = host.hits(CIMD_PATH) - hitsBefore;
        expect(fetched >= 1, 'the proxy never fetched the client\'s document');
        detail(`the document host served ${CIMD_PATH} ${fetched} time(s) (https, test CA via OAUTH_PROXY_EXTRA_CA_FILE)`);

        // Our consent page names the client as its document does.
        expect(consentText !== null, `our consent page was not shown: ${flow.steps.join(' > ')}`);
        expect(consentText.includes(CIMD_NAME), `the consent page does not show "${CIMD_NAME}": ${consentText.slice(0, 300)}`);
        expect(consentText.includes('127.0.0.1'), `the consent page does not show the host 127.0.0.1: ${consentText.slice(0, 300)}`);
        detail(`browser: ${flow.steps.join(' > ')}; consent page shows "${CIMD_NAME}"; callback iss=${params.iss}`);

        // The code exchange at /token as a public document client, and what the proxy saw.
        const iTok = session.fetchLog.findIndex(e => e.method === 'POST' && new URL(e.url).pathname === '/token' && e.status === 200);
        expect(iTok > 0, 'the 2.x SDK did not exchange the code at /token');
        expect(session.negotiatedVersion() === PROTOCOL_VERSION, `negotiated ${session.negotiatedVersion()}`);
        const tokens = provider.tokens();
        const claims = jwtClaims(tokens?.access_token);
        expect(claims && claims.iss === proxy.base, 'swap mode handed the 2.x client no proxy JWT');
        expect(claims.client_id === documentUrl, `the access token's client_id is ${claims.client_id}, expected ${documentUrl}`);
        expect(claims.sub === ACCOUNT.sub, `the access token's sub is ${claims.sub}`);
        expect(tokens.refresh_token, 'no refresh token');
        detail(`access token: client_id ${claims.client_id}, sub ${claims.sub}; refresh token issued`);

        // A tool through the gateway.
        const tools = await session.listTools();
        const names = tools.tools.map(t => t.name);
        expect(names.includes('whoami'), `tools/list: [${names.join(', ')}]`);
        const who = await whoamiV2(session, proxy);
        detail(`tools/list: [${names.join(', ')}]; whoami → "${who.sub}" with the upstream token`);

        // A refresh at /token as the document client (no browser).
        const now = Math.floor(Date.now() / 1000);
        const expired = await new SignJWT({ ...claims, iat: now - 3720, exp: now - 120 })
            .setProtectedHeader(decodeProtectedHeader(tokens.access_token))
            .sign(JWT_KEY_BYTES);
        provider.setTokens({ ...tokens, access_token: expired });
        const redirects = provider.redirects.length;
        const logStart = session.fetchLog.length;
        await whoamiV2(session, proxy);
        const refreshes = session.fetchLog.slice(logStart).filter(e => new URL(e.url).pathname === '/token');
        expect(provider.redirects.length === redirects, 'the SDK started a new browser authorization instead of refreshing');
        expect(refreshes.length === 1 && refreshes[0].status === 200, `refresh requests: ${JSON.stringify(refreshes)}`);
        const after = provider.tokens();
        expect(jwtClaims(after.access_token)?.client_id === documentUrl, 'the refreshed access token\'s client_id is not the document URL');
        expect(after.refresh_token && after.refresh_token !== tokens.refresh_token, 'the refresh token did not rotate');
        detail('refresh: 401 on the expired token → POST /token 200 as the document client → whoami works; refresh token rotated');

        // The proxy's own record (its audit events, in its log): the client is the document URL.
        const wanted = [
            ['token.issued', e => e.client_id === documentUrl && e.subject === ACCOUNT.sub],
            ['mcp.request', e => e.client_id === documentUrl && e.mcp?.name === 'whoami' && e.status === 200],
            ['token.refreshed', e => e.client_id === documentUrl]
        ];
        let missing = wanted;
        for (let i = 0; i < 30 && missing.length; i++) {
            if (i) await sleep(100);
            const events = readFileSync(proxy.logPath, 'utf8')
                .split('\n')
                .filter(l => l.startsWith('{'))
                .map(l => {
                    try {
                        return JSON.parse(l);
                    } catch {
                        return {};
                    }
                });
            missing = wanted.filter(([kind, test]) => !events.some(e => e.event === kind && test(e)));
        }
        expect(
            missing.length === 0,
            `the proxy's audit events lack ${missing.map(([k]) => k).join(', ')} with client_id ${documentUrl}`
        );
        detail(`the proxy's audit events: token.issued, mcp.request (whoami), token.refreshed with client_id ${documentUrl}`);
    } finally {
        await session?.close();
        await context.close().catch(() => {});
    }
}

async function scenario10() {
    const proxy = world.cimd;
    const context = await newContext(world.browser);
    const hostRequests = world.documents.requests.length;
    let session;
    try {
        const name = 'E2E SDK 2.x DCR Client';
        const a = await signInV2({ proxy, context, label: 'cimd-dcr', name });
        session = a.session;
        const { provider, authUrl, flow } = a;
        const log = session.fetchLog.map(e => `${e.method} ${new URL(e.url).pathname} ${e.status}`);
        detail(`SDK 2.x requests: ${log.join(' → ')}`);
        const advertised = provider.discoveryState()?.authorizationServerMetadata?.client_id_metadata_document_supported;
        expect(advertised === true, `the metadata says client_id_metadata_document_supported: ${advertised}`);
        const iReg = session.fetchLog.findIndex(e => e.method === 'POST' && new URL(e.url).pathname === '/register' && e.status === 201);
        const iTok = session.fetchLog.findIndex(e => e.method === 'POST' && new URL(e.url).pathname === '/token' && e.status === 200);
        expect(iReg > 0 && iTok > iReg, 'the 2.x SDK did not register (POST /register 201) and then exchange the code');
        const clientId = provider.clientInformation()?.client_id;
        expect(clientId && !/^https?:/.test(clientId), `the registered client_id is ${clientId}`);
        expect(authUrl.searchParams.get('client_id') === clientId, 'the authorization URL does not carry the registered client_id');
        expect(a.consentText?.includes(name), `the consent page does not show "${name}"`);
        const claims = jwtClaims(provider.tokens()?.access_token);
        expect(claims?.client_id === clientId, `the access token's client_id is ${claims?.client_id}, expected ${clientId}`);
        expect(world.documents.requests.length === hostRequests, 'the proxy fetched a document for a registered client');
        detail(`metadata advertised documents; no clientMetadataUrl → POST /register 201, client_id ${short(clientId, 12)}; ${flow.steps.join(' > ')}`);
        const tools = await session.listTools();
        expect(tools.tools.some(t => t.name === 'whoami'), 'tools/list lacks whoami');
        const who = await whoamiV2(session, proxy);
        detail(`tools/list, whoami → "${who.sub}" with the upstream token (access token client_id = the registered id)`);
    } finally {
        await session?.close();
        await context.close().catch(() => {});
    }
}

// ---------------------------------------------------------------- access policy (scenarios 11, 12)

/** The tokens of a space-delimited scope string, sorted, once each. */
function scopeSet(scope) {
    return [...new Set(String(scope ?? '').split(/\s+/).filter(Boolean))].sort();
}

/** A quoted parameter of a WWW-Authenticate challenge, or null. */
function challengeParam(www, name) {
    const m = new RegExp(`(?:^|[\\s,])${name}="([^"]*)"`).exec(www || '');
    return m ? m[1] : null;
}

/** The JSON lines of a proxy's log (its audit events) from byte `from` on. */
function logEvents(proxy, from = 0) {
    return readFileSync(proxy.logPath, 'utf8')
        .slice(from)
        .split('\n')
        .filter(l => l.startsWith('{'))
        .map(l => {
            try {
                return JSON.parse(l);
            } catch {
                return {};
            }
        });
}

/** A 2.x SDK client of the policy proxy, up to the authorization URL it produced. */
async function startPolicyClient({ proxy, label, name }) {
    const redirectUrl = world.callbacks.redirectUrl(label);
    const provider = new InMemoryOAuthProviderV2({ redirectUrl, clientMetadata: clientMetadata(name, redirectUrl, 'none') });
    const session = new McpSessionV2({ mcpUrl: proxy.mcpUrl, provider });
    const authUrl = await session.start();
    expect(authUrl, 'the 2.x SDK connected without authorization: the proxy did not ask for a token');
    return { session, provider, authUrl, redirectUrl };
}

const NOTE = 'step-up e2e: buy milk';

async function scenario11() {
    const proxy = world.policy;
    const server = world.mcp2;
    const wantedChallenge = `resource_metadata="${proxy.base}/.well-known/oauth-protected-resource/mcp"`;

    // The 401 names the baseline scope only.
    const bare = await rawMcpPost(proxy.mcpUrl);
    expectChallenge(bare, proxy, 'request without a token');
    const baseline = scopeSet(challengeParam(bare.www, 'scope'));
    expect(baseline.join(' ') === POLICY_BASELINE, `the 401's scope is "${baseline.join(' ')}", expected "${POLICY_BASELINE}"`);
    detail(`no token: 401, WWW-Authenticate: ${bare.www}`);

    const context = await newContext(world.browser);
    let session;
    try {
        // First sign-in: the SDK asks for the 401's scope (SEP-835: the
        // challenge's scope first), so its token lacks mcp:write.
        const first = await startPolicyClient({ proxy, label: 'stepup', name: 'E2E SDK 2.x Step-up Client' });
        session = first.session;
        const { provider, authUrl } = first;
        const asked = scopeSet(authUrl.searchParams.get('scope'));
        expect(asked.includes('mcp:read') && !asked.includes('mcp:write'), `the first authorization asks for "${asked.join(' ')}"`);
        // "Remember" stays ticked (the page's default): a remembered
        // approval covers the scopes approved, not more, so the step-up
        // below must show our consent page again.
        const a = await inBrowser({
            proxy,
            context,
            url: authUrl,
            onConsentPage: async page => {
                await page.screenshot({ path: join(ARTIFACTS, 'consent-stepup-first.png'), fullPage: true });
                expect(await page.isChecked('input[name="remember"]'), '"remember" is ticked by default');
            }
        });
        expect(a.consent, `our consent page was not shown: ${a.flow.steps.join(' > ')}`);
        expect(
            a.consent.scopes.includes('mcp:read') && !a.consent.scopes.includes('mcp:write'),
            `the first consent page lists [${a.consent.scopes.join(', ')}]`
        );
        const params = await world.callbacks.wait(provider.lastState);
        expect(typeof params.code === 'string' && !params.error, `authorization response: ${JSON.stringify(params)}`);
        await session.complete(params);
        const firstTokens = provider.tokens();
        const firstClaims = jwtClaims(firstTokens?.access_token);
        expect(firstClaims?.iss === proxy.base && firstClaims.sub === ACCOUNT.sub, 'the first sign-in gave no proxy JWT for the user');
        const firstGranted = scopeSet(firstTokens.scope);
        expect(
            firstGranted.includes('mcp:read') && !firstGranted.includes('mcp:write'),
            `the first token's scope is "${firstTokens.scope}"`
        );
        detail(
            `first sign-in: authorization URL scope="${authUrl.searchParams.get('scope')}"; consent page lists ` +
                `[${a.consent.scopes.join(', ')}]; ${a.flow.steps.join(' > ')}; token scope "${firstTokens.scope}"`
        );

        // The read tool works with that token.
        const tools = await session.listTools();
        const names = tools.tools.map(t => t.name);
        expect(names.includes('read_notes') && names.includes('write_note'), `tools/list: [${names.join(', ')}]`);
        const read = await session.callJson('read_notes');
        expect(Array.isArray(read.notes), `read_notes answered ${JSON.stringify(read)}`);
        detail(`tools/list: [${names.join(', ')}]; read_notes → ${JSON.stringify(read)}`);

        // The write tool: 403 insufficient_scope from the proxy; the SDK steps
        // up by itself (no refresh: the union of scopes is larger than the
        // token's) and hands us the new authorization URL.
        const notesBefore = server.notes.length;
        const receivedBefore = server.received.length;
        const redirectsBefore = provider.redirects.length;
        const logStart = session.fetchLog.length;
        let refusal = null;
        try {
            await session.callJson('write_note', { text: NOTE });
        } catch (e) {
            refusal = e;
        }
        expect(refusal, 'write_note succeeded with a token without mcp:write');
        const stepLog = session.fetchLog.slice(logStart);
        detail(`SDK 2.x requests: ${stepLog.map(e => `${e.method} ${new URL(e.url).pathname} ${e.status}`).join(' → ')}`);
        expect(
            refusal instanceof UnauthorizedErrorV2,
            `the SDK raised ${refusal?.constructor?.name}: ${refusal?.message} (expected UnauthorizedError after starting a new authorization)`
        );
        const challenged = stepLog.find(e => e.method === 'POST' && new URL(e.url).pathname === '/mcp' && e.status === 403);
        expect(challenged, 'the write_note call got no 403 from the proxy');
        expect(/(?:^|[\s,])error="insufficient_scope"/.test(challenged.www || ''), `the 403's challenge: ${challenged.www}`);
        expect((challenged.www || '').includes(wantedChallenge), `the 403's challenge lacks ${wantedChallenge}: ${challenged.www}`);
        const needed = scopeSet(challengeParam(challenged.www, 'scope'));
        expect(needed.includes('mcp:write'), `the 403's scope is "${needed.join(' ')}", expected it to name mcp:write`);
        expect(!needed.includes('offline_access'), `the 403's scope names offline_access: "${needed.join(' ')}"`);
        detail(`write_note: 403, WWW-Authenticate: ${challenged.www} (the SDK sent Mcp-Name: ${challenged.mcp['mcp-name'] ?? '(none)'})`);
        const reached = server.received.slice(receivedBefore).filter(r => r.mcp_name === 'write_note');
        expect(reached.length === 0 && server.notes.length === notesBefore, 'the refused write_note call reached the MCP server');
        const refreshed = stepLog.filter(e => new URL(e.url).pathname === '/token');
        expect(refreshed.length === 0, `the SDK went to /token before the new authorization: ${JSON.stringify(refreshed)}`);
        expect(provider.redirects.length === redirectsBefore + 1, `the SDK produced ${provider.redirects.length - redirectsBefore} authorization URL(s)`);
        const stepUrl = provider.redirects[redirectsBefore];
        const stepScope = scopeSet(stepUrl.searchParams.get('scope'));
        expect(
            stepScope.includes('mcp:read') && stepScope.includes('mcp:write'),
            `the step-up authorization asks for "${stepScope.join(' ')}"`
        );
        detail(`the MCP server never saw the call; the SDK raised UnauthorizedError with a new authorization URL: scope="${stepUrl.searchParams.get('scope')}"`);

        // The same browser authorizes again: our consent page shows the larger scope.
        const b = await inBrowser({
            proxy,
            context,
            url: stepUrl,
            onConsentPage: page => page.screenshot({ path: join(ARTIFACTS, 'consent-stepup.png'), fullPage: true })
        });
        expect(b.consent, `our consent page was not shown for the larger scope: ${b.flow.steps.join(' > ')}`);
        expect(
            b.consent.scopes.includes('mcp:read') && b.consent.scopes.includes('mcp:write'),
            `the step-up consent page lists [${b.consent.scopes.join(', ')}]`
        );
        const params2 = await world.callbacks.wait(provider.lastState);
        expect(typeof params2.code === 'string' && !params2.error, `step-up authorization response: ${JSON.stringify(params2)}`);
        await session.transport.finishAuth(new URLSearchParams(params2));
        const tokens = provider.tokens();
        const granted = scopeSet(tokens.scope);
        expect(granted.includes('mcp:read') && granted.includes('mcp:write'), `the step-up token's scope is "${tokens.scope}"`);
        expect(jwtClaims(tokens.access_token)?.sub === ACCOUNT.sub, 'the step-up token is not the user\'s');
        detail(`step-up: ${b.flow.steps.join(' > ')}; consent page lists [${b.consent.scopes.join(', ')}]; token scope "${tokens.scope}"`);

        // The retried call succeeds and reaches the server, with the upstream token.
        const written = await session.callJson('write_note', { text: NOTE });
        expect(written.written === NOTE, `write_note answered ${JSON.stringify(written)}`);
        expect(server.notes.length === notesBefore + 1 && server.notes.at(-1).text === NOTE, 'the MCP server did not store the note');
        const bearer = /^Bearer\s+(\S+)/i.exec(server.notes.at(-1).authorization || '')?.[1];
        expect(bearer && !isProxyJwt(bearer, proxy.base), 'the MCP server received the proxy\'s JWT');
        const readBack = await session.callJson('read_notes');
        expect(readBack.notes?.includes(NOTE), `read_notes after the write: ${JSON.stringify(readBack)}`);
        detail(`retried write_note → ${JSON.stringify(written)} (upstream token at the server); read_notes → ${JSON.stringify(readBack)}`);

        // The proxy's record (its audit events, in its log): the refusal, then the call.
        const wanted = [
            [
                'request.refused 403 for write_note',
                e => e.event === 'request.refused' && e.status === 403 && e.mcp?.name === 'write_note' && e.subject === ACCOUNT.sub
            ],
            ['mcp.request 200 for write_note', e => e.event === 'mcp.request' && e.mcp?.name === 'write_note' && e.status === 200]
        ];
        let missing = wanted;
        for (let i = 0; i < 30 && missing.length; i++) {
            if (i) await sleep(100);
            const events = logEvents(proxy);
            missing = wanted.filter(([, test]) => !events.some(test));
        }
        expect(missing.length === 0, `the proxy's audit events lack ${missing.map(([what]) => what).join(', ')}`);
        detail('the proxy\'s audit events: request.refused (403, write_note, alice.e2e), then mcp.request (200, write_note)');
    } finally {
        await session?.close();
        await context.close().catch(() => {});
    }
}

async function scenario12() {
    const proxy = world.policy;
    const exchanges = () =>
        world.upstream.tokenRequests.filter(r => r.client_id === 'mcp-proxy-policy' && r.grant_type === 'authorization_code');

    // The outsider: signed in by the upstream, refused by the proxy.
    let context = await newContext(world.browser);
    let session;
    try {
        const c = await startPolicyClient({ proxy, label: 'outsider', name: 'E2E Outsider Client' });
        session = c.session;
        const { provider, authUrl } = c;
        const logFrom = readFileSync(proxy.logPath, 'utf8').length;
        const exchangesBefore = exchanges().length;
        const { flow } = await inBrowser({ proxy, context, url: authUrl, account: OUTSIDER });
        const expectedSteps = ['proxy-consent', 'upstream-login', 'upstream-consent', 'client-callback'];
        expect(flow.steps.join(',') === expectedSteps.join(','), `browser steps were ${flow.steps.join(' > ')}`);
        const params = await world.callbacks.wait(provider.lastState);
        expect(params.error === 'access_denied', `the outsider's authorization response: ${JSON.stringify(params)}`);
        expect(!('code' in params), 'a code came back for the outsider');
        expect(params.state === provider.lastState, `state ${params.state} is not the client's ${provider.lastState}`);
        expect(params.iss === proxy.base, `the refusal's iss is ${params.iss}, expected ${proxy.base}`);
        const description = params.error_description || '';
        expect(/not allowed|not permitted/i.test(description), `error_description "${description}" does not say the account is not allowed`);
        for (const secret of ['@', 'email', OUTSIDER.sub, POLICY_ALLOWED_USERS]) {
            expect(!description.includes(secret), `error_description "${description}" tells about the rule or the account (${secret})`);
        }
        expect(provider.tokens() === undefined, 'the outsider\'s client holds tokens');
        expect(exchanges().length === exchangesBefore + 1, 'the proxy did not exchange the outsider\'s upstream code');
        detail(
            `outsider ${OUTSIDER.login} (${OUTSIDER.email}): ${flow.steps.join(' > ')}; callback: error=${params.error}, ` +
                `error_description="${description}", state matches, no code, iss=${params.iss ?? '(none)'}`
        );
        // The proxy's record: a log line about the refusal, and no code or token for the outsider.
        let lines = [];
        for (let i = 0; i < 30 && lines.length === 0; i++) {
            if (i) await sleep(100);
            lines = readFileSync(proxy.logPath, 'utf8')
                .slice(logFrom)
                .split('\n')
                .filter(l => /not allowed|refus|denied/i.test(l));
        }
        expect(lines.length > 0, 'the proxy logged nothing about the refused sign-in');
        const events = logEvents(proxy, logFrom);
        const clientId = provider.clientInformation()?.client_id;
        const refused = events.find(
            e => e.event === 'upstream.sign_in' && e.outcome === 'refused' && e.subject === OUTSIDER.sub && e.client_id === clientId
        );
        expect(refused, `no refused upstream.sign_in audit event for ${OUTSIDER.sub} and client ${clientId}`);
        const issued = events.filter(e => ['code.issued', 'token.issued'].includes(e.event));
        expect(issued.length === 0, `the proxy recorded ${issued.map(e => e.event).join(', ')} for the outsider's sign-in`);
        const warned = lines.filter(l => !l.startsWith('{'));
        detail(`the proxy's log line: ${warned.map(l => oneLine(l).slice(0, 240)).join(' | ') || '(none but the audit event)'}`);
        detail(`audit event: upstream.sign_in, outcome refused, subject ${refused.subject}, reason "${refused.reason}"`);
        detail('no code.issued or token.issued event after the outsider\'s upstream sign-in');
    } finally {
        await session?.close();
        await context.close().catch(() => {});
    }

    // The allowed account still signs in and calls a tool.
    context = await newContext(world.browser);
    session = undefined;
    try {
        const c = await startPolicyClient({ proxy, label: 'insider', name: 'E2E Insider Client' });
        session = c.session;
        const { provider, authUrl } = c;
        const { flow } = await inBrowser({ proxy, context, url: authUrl });
        const params = await world.callbacks.wait(provider.lastState);
        expect(typeof params.code === 'string' && !params.error, `the allowed account's authorization response: ${JSON.stringify(params)}`);
        await session.complete(params);
        expect(jwtClaims(provider.tokens()?.access_token)?.sub === ACCOUNT.sub, 'the allowed account got no token of its own');
        const who = await whoamiV2(session, proxy);
        detail(`allowed ${ACCOUNT.login} (${ACCOUNT.email}): ${flow.steps.join(' > ')} → code → token; whoami → "${who.sub}"`);
    } finally {
        await session?.close();
        await context.close().catch(() => {});
    }
}

const SCENARIOS = [
    ['1', 'scenario 1: swap mode, consent on (401, discovery, DCR, consent page, upstream login, tools/list, whoami)', scenario1],
    ['2', 'scenario 2: refresh on 401, rotated-out refresh token refused', scenario2],
    ['3', 'scenario 3: deny on our consent page', scenario3],
    ['4', 'scenario 4: pass-through mode (upstream client_secret_post)', scenario4],
    ['5', 'scenario 5: remembered consent', scenario5],
    ['6', 'scenario 6: tampered, alg=none, expired, foreign-audience tokens; error page', scenario6],
    [
        '7',
        `scenario 7: MCP SDK 2.x, protocol ${PROTOCOL_VERSION} (sign-in, tools/list, refresh, x-mcp-header tool via Mcp-Param-${PARAM_HEADER})`,
        scenario7
    ],
    [
        '8',
        'scenario 8: the operator\'s view (sign-in, MCP calls, refresh, `admin grants revoke --sub` → 401, the audit trail tells it and passes `audit verify`, an edited copy fails)',
        scenario8
    ],
    [
        '9',
        'scenario 9: MCP SDK 2.x with clientMetadataUrl: its Client ID Metadata Document (https, test CA) is its client_id; no registration; sign-in, whoami, refresh',
        scenario9
    ],
    [
        '10',
        'scenario 10: MCP SDK 2.x without clientMetadataUrl against a proxy that advertises documents: registers by DCR, whoami',
        scenario10
    ],
    [
        '11',
        'scenario 11: scope step-up, MCP SDK 2.x (write_* needs mcp:write: 403 insufficient_scope, the SDK authorizes again with the larger scope through the browser, the retried call succeeds)',
        scenario11
    ],
    [
        '12',
        'scenario 12: OAUTH_PROXY_ALLOWED_USERS (an account outside it is refused at the callback with access_denied and no code; the allowed account signs in)',
        scenario12
    ]
];

// ---------------------------------------------------------------- main

async function main() {
    const started = Date.now();
    const selected = SCENARIOS.filter(([n]) => ONLY.length === 0 || ONLY.includes(n));
    const results = [];
    let setupError = null;
    try {
        await withTimeout(setUp(), 90000, 'set-up');
    } catch (e) {
        setupError = e;
        console.log(`FAIL setup: ${oneLine(e.message)}`);
    }
    for (const [, name, fn] of selected) {
        if (setupError) {
            results.push({ name, ok: false });
            console.log(`FAIL ${name}: not run, set-up failed`);
            continue;
        }
        console.log(`--- ${name}`);
        const t0 = Date.now();
        try {
            await withTimeout(fn(), SCENARIO_TIMEOUT_MS, name);
            results.push({ name, ok: true });
            console.log(`PASS ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
        } catch (e) {
            results.push({ name, ok: false });
            console.log(`FAIL ${name}: ${oneLine(e.message)}`);
            if (process.env.E2E_DEBUG) console.error(e);
        }
    }
    await tearDown();
    const passed = results.filter(r => r.ok).length;
    const failed = results.length - passed;
    console.log('');
    console.log('=== end-to-end summary');
    const failedNames = results.filter(r => !r.ok).map(r => r.name.split(':')[0]);
    if (failedNames.length) console.log(`failed: ${failedNames.join(', ')}`);
    console.log(`artifacts: ${ARTIFACTS} (consent.png, consent-mobile.png, error.png, proxy-*.log)`);
    console.log(`duration: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    console.log(`e2e: ${passed} passed, ${failed} failed`);
    return failed === 0 && passed > 0 && !setupError ? 0 : 1;
}

for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
        console.log(`FAIL suite: interrupted by ${signal}`);
        killAllProxies();
        process.exit(1);
    });
}

main().then(
    code => process.exit(code),
    e => {
        console.log(`FAIL suite: ${oneLine(e?.stack || e)}`);
        killAllProxies();
        process.exit(1);
    }
);
