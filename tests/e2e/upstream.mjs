// The upstream OAuth/OIDC server: `oidc-provider` (OpenID Certified), run
// in-process on a loopback port.
//
// - In-memory adapter (the library's default), two accounts (ACCOUNT, and
//   OUTSIDER whose email is in another domain).
// - One pre-registered confidential client per proxy configuration, each with
//   the proxy's callback as its only redirect URI and its own token endpoint
//   authentication method (client_secret_basic or client_secret_post).
//   oidc-provider refuses any other method than the registered one, so a
//   successful code exchange proves which one the proxy used; the recorder
//   below also notes it for each token request.
// - Refresh tokens are issued to every client allowed the refresh_token grant.
// - Userinfo (/me) is on; the devInteractions login and consent pages are the
//   interaction pages the browser fills in.

import http from 'node:http';
import { randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';
import { exportJWK, generateKeyPair } from 'jose';

/** The main user. devInteractions uses the login name as the account id. */
export const ACCOUNT = Object.freeze({
    login: 'alice.e2e',
    password: 'correct horse battery staple',
    sub: 'alice.e2e',
    name: 'Alice Example',
    email: 'alice@example.test'
});

/**
 * A second user, whose verified email is outside alice's domain: the one
 * `OAUTH_PROXY_ALLOWED_USERS` refuses in scenario 12.
 */
export const OUTSIDER = Object.freeze({
    login: 'mallory.e2e',
    password: 'tr0ub4dor&3',
    sub: 'mallory.e2e',
    name: 'Mallory Outsider',
    email: 'mallory@elsewhere.test'
});

const ACCOUNTS = new Map([ACCOUNT, OUTSIDER].map(a => [a.sub, a]));

/**
 * Starts oidc-provider on 127.0.0.1:<port>.
 *
 * @param {object} opts
 * @param {number} opts.port
 * @param {Array<{client_id: string, client_secret: string, redirect_uri: string, auth_method: string}>} opts.clients
 */
export async function startUpstream({ port, clients }) {
    const issuer = `http://127.0.0.1:${port}`;
    const { privateKey } = await generateKeyPair('RS256', { extractable: true });
    const signingKey = { ...(await exportJWK(privateKey)), use: 'sig', alg: 'RS256', kid: 'e2e-rs256' };

    const configuration = {
        clients: clients.map(c => ({
            client_id: c.client_id,
            client_secret: c.client_secret,
            client_name: `mcp-oauth-proxy (${c.auth_method})`,
            redirect_uris: [c.redirect_uri],
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            token_endpoint_auth_method: c.auth_method
        })),
        async findAccount(_ctx, sub) {
            const account = ACCOUNTS.get(sub);
            if (!account) return undefined;
            return {
                accountId: sub,
                async claims() {
                    return { sub, name: account.name, email: account.email, email_verified: true };
                }
            };
        },
        claims: {
            openid: ['sub'],
            profile: ['name'],
            email: ['email', 'email_verified']
        },
        scopes: ['openid', 'offline_access', 'profile', 'email'],
        features: {
            devInteractions: { enabled: true },
            userinfo: { enabled: true },
            revocation: { enabled: true }
        },
        // Refresh tokens for every client allowed the grant (not only when
        // offline_access survived the request).
        async issueRefreshToken(_ctx, client) {
            return client.grantTypeAllowed('refresh_token');
        },
        jwks: { keys: [signingKey] },
        cookies: { keys: [randomBytes(32).toString('base64url')] },
        ttl: {
            AccessToken: 3600,
            AuthorizationCode: 120,
            IdToken: 3600,
            Interaction: 600,
            Session: 3600,
            Grant: 3600,
            RefreshToken: 86400
        }
    };

    const provider = new Provider(issuer, configuration);

    // Token endpoint requests, as the upstream saw them.
    const tokenRequests = [];
    provider.use(async (ctx, next) => {
        await next();
        if (ctx.method === 'POST' && ctx.path === '/token') {
            const authz = ctx.get('authorization') || '';
            const body = ctx.oidc?.body || {};
            tokenRequests.push({
                client_id: ctx.oidc?.client?.clientId ?? null,
                grant_type: body.grant_type ?? null,
                basic_header: /^basic\s/i.test(authz),
                secret_in_body: typeof body.client_secret === 'string',
                status: ctx.status
            });
        }
    });
    // Keep the library's expected-error noise (e.g. refused refresh tokens) off
    // the test output; server errors are still shown.
    provider.on('server_error', (_ctx, err) => console.error('[upstream] server_error', err));

    const server = http.createServer(provider.callback());
    await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', resolve);
    });

    return {
        issuer,
        userinfoUrl: `${issuer}/me`,
        tokenRequests,
        async close() {
            server.closeAllConnections?.();
            await new Promise(resolve => server.close(() => resolve()));
        }
    };
}
