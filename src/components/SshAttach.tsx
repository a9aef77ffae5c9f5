/**
 * The parts of the attach dialog that are particular to SSH machines: a picker of the key
 * files in the server user's ~/.ssh (typing any path still works), and the step that shows an
 * unknown or changed host key's fingerprint so that the user accepts exactly that key, or not.
 */
import * as React from 'react';

import type { ISshKeyFile, ITarget } from '../api';
import type { ComputeModel } from '../model';
import { ComputeApiError, messageOf } from '../request';
import { type IControlProps, TextInput } from './SchemaForm';

export const SSH_KIND = 'ssh';
export const KEY_FIELD = 'ssh_private_key';
export const ACCEPT_FIELD = 'accept_host_key';

/** A host key the server refused to trust until the user accepts it. */
export interface IHostKeyChallenge {
  fingerprint: string;
  algorithm: string;
  host: string;
  port: number | null;
  /** True when the host presents a key other than the one known for it. */
  changed: boolean;
  message: string;
}

/** The host-key question in an attach's 400 answer, or null when it is about something else. */
export function hostKeyChallenge(error: unknown): IHostKeyChallenge | null {
  if (
    !(error instanceof ComputeApiError) ||
    error.status !== 400 ||
    (error.reason !== 'unknown_host_key' && error.reason !== 'host_key_changed')
  ) {
    return null;
  }
  const details = error.details ?? {};
  const fingerprint = details.fingerprint;
  if (typeof fingerprint !== 'string' || !/^SHA256:\S+$/.test(fingerprint)) {
    return null;
  }
  return {
    fingerprint,
    algorithm: typeof details.algorithm === 'string' ? details.algorithm : '',
    host: typeof details.host === 'string' ? details.host : '',
    port: typeof details.port === 'number' ? details.port : null,
    changed: error.reason === 'host_key_changed',
    message: error.message
  };
}

/** "me@gpu.example.org:2222": how an ssh row names its machine (the port only when not 22). */
export function sshAddress(target: ITarget): string {
  const p = target.properties ?? {};
  const host = typeof p.host === 'string' ? p.host : '';
  if (!host) {
    return '';
  }
  const user =
    typeof p.username === 'string' && p.username ? `${p.username}@` : '';
  const shown = host.includes(':') ? `[${host}]` : host;
  const port = typeof p.port === 'number' && p.port !== 22 ? `:${p.port}` : '';
  return `${user}${shown}${port}`;
}

/** The problem of a path the listing knows to be refused, or null. */
export function keyProblem(
  keys: readonly ISshKeyFile[] | null,
  path: string
): string | null {
  const key = keys?.find(k => k.path === path.trim());
  return key && !key.usable
    ? (key.problem ?? 'This key file is refused')
    : null;
}

/** The candidate key files, fetched once per dialog; null until known (or when unavailable). */
export function useSshKeys(
  model: ComputeModel,
  active: boolean
): { keys: ISshKeyFile[] | null; directory: string; error: string } {
  const [state, setState] = React.useState<{
    keys: ISshKeyFile[] | null;
    directory: string;
    error: string;
  }>({ keys: null, directory: '', error: '' });
  React.useEffect(() => {
    if (!active) {
      return;
    }
    let live = true;
    model.api.listSshKeys().then(
      listing =>
        live &&
        setState({
          keys: listing.keys,
          directory: listing.directory,
          error: ''
        }),
      error =>
        live && setState({ keys: null, directory: '', error: messageOf(error) })
    );
    return () => {
      live = false;
    };
  }, [model, active]);
  return state;
}

/** The key file field: a list of the keys found, beside a text input for any path. */
export function KeyFilePicker(
  props: IControlProps & {
    keys: ISshKeyFile[] | null;
    directory: string;
    error: string;
  }
): JSX.Element {
  const { keys, value, onChange, ...input } = props;
  const listed = keys?.some(k => k.path === value.trim()) ? value.trim() : '';
  const refused = (keys ?? []).filter(k => !k.usable);
  return (
    <div className="jp-ComputeKeyPicker">
      <select
        className="jp-mod-styled jp-ComputeForm-input jp-ComputeKeyPicker-list"
        aria-label={`Key files in ${props.directory || '~/.ssh'}`}
        value={listed}
        disabled={props.disabled || !keys || keys.length === 0}
        onChange={event => onChange(event.target.value)}
      >
        <option value="">
          {keys === null
            ? props.error
              ? 'Key files could not be listed'
              : 'Looking for key files…'
            : keys.length === 0
              ? `No key files in ${props.directory}`
              : `Choose a key file in ${props.directory}`}
        </option>
        {(keys ?? []).map(k => (
          <option key={k.path} value={k.path} disabled={!k.usable}>
            {k.usable
              ? k.name
              : `${k.name} — refused: ${k.readable_by_others ? 'others can read it' : 'too open'} (${k.mode})`}
          </option>
        ))}
      </select>
      <TextInput
        {...input}
        placeholder="or type the path of a key file"
        value={value}
        onChange={event => onChange(event.target.value)}
      />
      {refused.length ? (
        <ul className="jp-ComputeKeyPicker-refused">
          {refused.map(k => (
            <li key={k.path} data-path={k.path}>
              {k.problem}
            </li>
          ))}
        </ul>
      ) : null}
    </div>
  );
}

/** The host key to check, what accepting it means, and the choice. */
export function HostKeyStep(props: {
  challenge: IHostKeyChallenge;
  busy: boolean;
  onAccept: () => void;
  onBack: () => void;
}): JSX.Element {
  const { challenge, busy } = props;
  const ref = React.useRef<HTMLDivElement>(null);
  // The step takes the place of the form: focus moves to it, not to the accept button. The Attach
  // button, disabled while the request ran and then gone, may drop its focus to the page's body a
  // moment later (later still on a busy machine): for a second, focus that lands nowhere comes back
  // to the step. Focus the person moved to another control is left there.
  React.useEffect(() => {
    const node = ref.current;
    if (!node) {
      return;
    }
    node.focus();
    const timers = [0, 50, 150, 400, 1000].map(ms =>
      window.setTimeout(() => {
        const active = document.activeElement;
        if (node.isConnected && (!active || active === document.body)) {
          node.focus();
        }
      }, ms)
    );
    return () => timers.forEach(t => window.clearTimeout(t));
  }, [challenge.fingerprint]);
  const where =
    challenge.port && challenge.port !== 22
      ? `${challenge.host}:${challenge.port}`
      : challenge.host;
  return (
    <div
      ref={ref}
      tabIndex={-1}
      className={`jp-ComputeHostKey${challenge.changed ? ' jp-mod-changed' : ''}`}
      role="group"
      aria-labelledby="jp-ComputeHostKey-title"
      data-reason={challenge.changed ? 'host_key_changed' : 'unknown_host_key'}
    >
      <h3 id="jp-ComputeHostKey-title" className="jp-ComputeHostKey-title">
        {challenge.changed
          ? `The host key of ${where} has CHANGED`
          : `Is this the host key of ${where}?`}
      </h3>
      <p>
        {challenge.changed
          ? 'The machine presents a key other than the one known for it. Someone may be intercepting the connection. Accept only if you know the key was changed on purpose.'
          : 'This server has never connected to this machine before, so it cannot tell it from an impostor.'}
      </p>
      <dl className="jp-ComputeHostKey-facts">
        <dt>Fingerprint</dt>
        <dd>
          <code className="jp-ComputeHostKey-fingerprint">
            {challenge.fingerprint}
          </code>
        </dd>
        {challenge.algorithm ? (
          <>
            <dt>Key type</dt>
            <dd>{challenge.algorithm}</dd>
          </>
        ) : null}
      </dl>
      <p>
        Compare it with the fingerprint shown on the machine itself, for example
        by <code>ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub</code>. If you
        accept, exactly this key is remembered for {where} and trusted for every
        later connection; any other key is refused again.
      </p>
      <div className="jp-ComputeHostKey-buttons">
        <button
          type="button"
          className="jp-Button jp-mod-styled jp-mod-reject"
          disabled={busy}
          onClick={props.onBack}
        >
          Back
        </button>
        <button
          type="button"
          className={`jp-Button jp-mod-styled ${challenge.changed ? 'jp-mod-warn' : 'jp-mod-accept'}`}
          disabled={busy}
          onClick={props.onAccept}
        >
          {busy ? 'Attaching…' : 'Accept this key and attach'}
        </button>
      </div>
    </div>
  );
}
