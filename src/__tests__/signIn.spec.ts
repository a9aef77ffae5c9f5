import { ComputeApi } from '../api';
import { offersSignIn } from '../components/SignIn';
import { ComputeApiError } from '../request';
import { FakeServer } from './fakeServer';

const PENDING = {
  workspace: 'ml',
  state: 'pending',
  verification_uri: 'https://microsoft.com/devicelogin',
  user_code: 'ABCD2345E',
  message:
    'To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code ABCD2345E to authenticate.',
  expires_on: '2026-11-23T13:00:00+00:00',
  account: null,
  error: null
};

describe('device-code sign-in', () => {
  let server: FakeServer;
  let api: ComputeApi;

  beforeEach(() => {
    server = new FakeServer();
    api = new ComputeApi({ serverSettings: server.settings });
  });

  it('starts, reads and cancels the sign-in of a workspace', async () => {
    server
      .on('POST', 'workspaces/ml/sign-in', { status: 202, body: PENDING })
      .on('GET', 'workspaces/ml/sign-in', {
        status: 200,
        body: {
          ...PENDING,
          state: 'signed_in',
          account: 'alice@contoso.example'
        }
      })
      .on('DELETE', 'workspaces/ml/sign-in', {
        status: 200,
        body: {
          ...PENDING,
          state: 'cancelled',
          error: 'The sign-in was cancelled.'
        }
      });
    const started = await api.startSignIn('ml');
    expect(started.user_code).toBe('ABCD2345E');
    expect(started.verification_uri).toBe('https://microsoft.com/devicelogin');
    expect((await api.getSignIn('ml')).account).toBe('alice@contoso.example');
    expect((await api.cancelSignIn('ml')).state).toBe('cancelled');
    expect(server.requests.map(r => `${r.method} ${r.path}`)).toEqual([
      'POST workspaces/ml/sign-in',
      'GET workspaces/ml/sign-in',
      'DELETE workspaces/ml/sign-in'
    ]);
  });

  it('is offered only for a sign-in failure that says device code helps', () => {
    const auth = (details: Record<string, unknown> | null) =>
      new ComputeApiError({
        message: 'Could not sign in to Azure',
        status: 502,
        reason: 'azure_auth',
        details
      });
    expect(offersSignIn(auth({ sign_in: 'device_code' }))).toBe(true);
    // A missing role is azure_auth too, but signing in again would not grant it.
    expect(offersSignIn(auth(null))).toBe(false);
    expect(
      offersSignIn(
        new ComputeApiError({
          message: 'busy',
          status: 503,
          reason: 'azure_unavailable',
          details: { sign_in: 'device_code' }
        })
      )
    ).toBe(false);
    expect(offersSignIn(null)).toBe(false);
  });

  it('passes a refused start on with the server message', async () => {
    server.on('POST', 'workspaces/local/sign-in', {
      status: 400,
      body: {
        message: "workspace 'local' is not an Azure ML workspace",
        reason: 'not_azure',
        field: null
      }
    });
    await expect(api.startSignIn('local')).rejects.toMatchObject({
      status: 400,
      reason: 'not_azure'
    });
  });
});
