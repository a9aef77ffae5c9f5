/**
 * Device-code sign-in to an Azure ML workspace, offered in the sidebar's error banner when the
 * workspace answers `azure_auth`: shows the code (with a copy button) and the page to enter it
 * on, follows the sign-in until it ends, then reloads the list. Nothing asks Azure for a code
 * until the person clicks; asking again while one is pending shows that one.
 */
import { Clipboard } from '@jupyterlab/apputils';
import { copyIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import type { ISignIn } from '../api';
import type { ComputeModel } from '../model';
import { ComputeApiError } from '../request';

/** How often a pending sign-in is asked how it is going. */
export const SIGN_IN_POLL_MS = 2000;

/** Whether an error says that a device-code sign-in would help. */
export function offersSignIn(error: ComputeApiError | null): boolean {
  return (
    !!error &&
    error.reason === 'azure_auth' &&
    error.details?.sign_in === 'device_code'
  );
}

const ENDED: Record<string, string> = {
  failed: 'Sign-in failed',
  expired: 'The code expired',
  cancelled: 'Sign-in cancelled'
};

export function SignIn(props: {
  model: ComputeModel;
  workspace: string;
}): JSX.Element {
  const { model, workspace } = props;
  const [signIn, setSignIn] = React.useState<ISignIn | null>(null);
  const [busy, setBusy] = React.useState(false);
  const [problem, setProblem] = React.useState<string | null>(null);
  const [copied, setCopied] = React.useState(false);

  const pending = signIn?.state === 'pending';
  React.useEffect(() => {
    if (!pending) {
      return;
    }
    let live = true;
    const timer = setInterval(() => {
      model.api.getSignIn(workspace).then(
        next => {
          if (!live) {
            return;
          }
          setSignIn(next);
          if (next.state === 'signed_in') {
            void model.refresh();
          }
        },
        (error: unknown) => {
          if (live) {
            setProblem((error as Error).message);
          }
        }
      );
    }, SIGN_IN_POLL_MS);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, [model, workspace, pending]);

  const start = async () => {
    setBusy(true);
    setProblem(null);
    setCopied(false);
    try {
      setSignIn(await model.api.startSignIn(workspace));
    } catch (error) {
      setProblem((error as Error).message);
    } finally {
      setBusy(false);
    }
  };

  const cancel = async () => {
    try {
      setSignIn(await model.api.cancelSignIn(workspace));
    } catch (error) {
      setProblem((error as Error).message);
    }
  };

  if (signIn && pending && signIn.user_code && signIn.verification_uri) {
    return (
      <div
        className="jp-ComputeSignIn"
        data-state="pending"
        aria-label="Device-code sign-in"
      >
        <div className="jp-ComputeSignIn-step">
          Open{' '}
          <a
            className="jp-ComputeSignIn-link"
            href={signIn.verification_uri}
            target="_blank"
            rel="noopener noreferrer"
          >
            {signIn.verification_uri}
          </a>{' '}
          and enter the code
        </div>
        <div className="jp-ComputeSignIn-codeRow">
          <code className="jp-ComputeSignIn-code" aria-label="Sign-in code">
            {signIn.user_code}
          </code>
          <button
            type="button"
            className="jp-ComputeToolbarButton"
            data-command="copy-sign-in-code"
            aria-label="Copy the sign-in code"
            title="Copy the code"
            onClick={() => {
              Clipboard.copyToSystem(signIn.user_code ?? '');
              setCopied(true);
            }}
          >
            <copyIcon.react tag="span" elementSize="small" />
          </button>
          {copied ? (
            <span className="jp-ComputeSignIn-copied" role="status">
              Copied
            </span>
          ) : null}
        </div>
        <div className="jp-ComputeSignIn-waiting" role="status">
          Waiting for you to sign in…{' '}
          <button
            type="button"
            className="jp-ComputeLink"
            data-command="cancel-sign-in"
            onClick={() => void cancel()}
          >
            Cancel
          </button>
        </div>
        {problem ? (
          <div className="jp-ComputeSignIn-problem">{problem}</div>
        ) : null}
      </div>
    );
  }

  const ended = signIn && ENDED[signIn.state];
  return (
    <div
      className="jp-ComputeSignIn"
      data-state={signIn?.state ?? 'idle'}
      aria-label="Device-code sign-in"
    >
      {signIn?.state === 'signed_in' ? (
        <div role="status">
          Signed in{signIn.account ? ` as ${signIn.account}` : ''}; loading…
        </div>
      ) : null}
      {ended ? (
        <div className="jp-ComputeSignIn-problem" role="alert">
          {ended}
          {signIn?.error ? `: ${signIn.error}` : ''}
        </div>
      ) : null}
      {problem ? (
        <div className="jp-ComputeSignIn-problem" role="alert">
          {problem}
        </div>
      ) : null}
      {signIn?.state !== 'signed_in' ? (
        <button
          type="button"
          className="jp-mod-styled jp-mod-accept jp-ComputeSignIn-start"
          data-command="sign-in"
          disabled={busy}
          onClick={() => void start()}
        >
          {busy ? 'Asking Azure for a code…' : 'Sign in with a device code'}
        </button>
      ) : null}
    </div>
  );
}
