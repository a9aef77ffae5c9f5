/**
 * A compute instance's applications as small links (JupyterLab, Jupyter, RStudio…), and the
 * SSH command where its SSH port is open, for the rows of the list and the pinned instance.
 */
import { Clipboard } from '@jupyterlab/apputils';
import * as React from 'react';

import type { ITarget } from '../api';
import { applicationLinks } from './DetailsView';

/** `ssh -p PORT USER@ADDRESS` for a target whose SSH port is open to the public; '' otherwise. */
export function sshCommand(target: ITarget): string {
  const ssh = target.properties?.ssh as
    | { public_access?: boolean; admin_username?: string; port?: number }
    | undefined;
  const addresses = target.properties?.addresses as
    | { public?: string; private?: string }
    | undefined;
  if (!ssh?.public_access || !addresses?.public) {
    return '';
  }
  const user = ssh.admin_username ? `${ssh.admin_username}@` : '';
  const port = ssh.port ? `-p ${ssh.port} ` : '';
  return `ssh ${port}${user}${addresses.public}`;
}

export function ApplicationLinks(props: {
  target: ITarget;
  tabIndex?: number;
  /** Opens a page of the Jupyter server itself (a proxied dashboard) in a JupyterLab tab. */
  openInTab?: (url: string, label: string) => void;
}): JSX.Element | null {
  const { target } = props;
  // Links only lead somewhere while the instance runs.
  if (target.state !== 'running') {
    return null;
  }
  const links = applicationLinks(target);
  const ssh = sshCommand(target);
  if (links.length === 0 && !ssh) {
    return null;
  }
  return (
    <span
      className="jp-ComputeApps"
      role="group"
      aria-label={`Applications of ${target.name}`}
    >
      {links.map(link => (
        <a
          key={link.label}
          className="jp-ComputeApps-link"
          href={link.url}
          target="_blank"
          rel="noopener noreferrer"
          title={`Open ${link.label} on ${target.name}`}
          tabIndex={props.tabIndex}
          onClick={event => {
            event.stopPropagation();
            // A page the server itself serves opens in a JupyterLab tab; a modified click
            // (a new browser tab or window) is left to the browser.
            if (
              props.openInTab &&
              link.sameServer &&
              !(
                event.ctrlKey ||
                event.metaKey ||
                event.shiftKey ||
                event.button
              )
            ) {
              event.preventDefault();
              props.openInTab(link.url, `${link.label} · ${target.name}`);
            }
          }}
        >
          {link.label}
        </a>
      ))}
      {ssh ? (
        <button
          type="button"
          className="jp-ComputeApps-link"
          title={`Copy: ${ssh}`}
          aria-label={`Copy the SSH command of ${target.name}`}
          tabIndex={props.tabIndex}
          onClick={event => {
            event.stopPropagation();
            Clipboard.copyToSystem(ssh);
          }}
        >
          SSH
        </button>
      ) : null}
    </span>
  );
}
