/**
 * A page the Jupyter server serves (a Dask dashboard through its proxy) in a JupyterLab tab: one
 * tab per address, brought to the front when opened again.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import type { JupyterFrontEnd } from '@jupyterlab/application';
import { IFrame } from '@jupyterlab/ui-components';

export function openPageTab(
  shell: JupyterFrontEnd.IShell,
  url: string,
  label: string
): MainAreaWidget<IFrame> {
  const id = `jupyter-compute-page-${encodeURIComponent(url)}`;
  for (const widget of shell.widgets('main')) {
    if (widget.id === id) {
      shell.activateById(id);
      return widget as MainAreaWidget<IFrame>;
    }
  }
  // The page is of the server's own origin and needs its scripts: the sandbox allows them, and
  // the server's authentication (its cookie) goes with the requests.
  const content = new IFrame({
    sandbox: [
      'allow-scripts',
      'allow-same-origin',
      'allow-forms',
      'allow-popups'
    ]
  });
  content.url = url;
  content.addClass('jp-ComputePageTab');
  const widget = new MainAreaWidget({ content });
  widget.id = id;
  widget.title.label = label;
  widget.title.caption = url;
  widget.title.closable = true;
  shell.add(widget, 'main');
  shell.activateById(id);
  return widget;
}
