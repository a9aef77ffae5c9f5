/**
 * The commands of the Compute panel, for the command palette and keyboard shortcuts
 * (the shortcuts themselves are in `schema/plugin.json`).
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import {
  addIcon,
  deleteIcon,
  linkIcon,
  refreshIcon,
  runIcon,
  stopIcon
} from '@jupyterlab/ui-components';

import type { ComputePanel } from './components/ComputePanel';
import type { ComputeController } from './controller';
import { computeIcon } from './icons';
import type { TargetAction } from './state';

export namespace CommandIDs {
  export const open = 'jupyter-compute:open';
  export const refresh = 'jupyter-compute:refresh';
  export const create = 'jupyter-compute:create';
  export const attach = 'jupyter-compute:attach';
  export const start = 'jupyter-compute:start';
  export const stop = 'jupyter-compute:stop';
  export const restart = 'jupyter-compute:restart';
  export const remove = 'jupyter-compute:delete';
  export const details = 'jupyter-compute:details';
}

const CATEGORY = 'Compute';

export function registerCommands(
  app: JupyterFrontEnd,
  panel: ComputePanel,
  controller: ComputeController,
  palette: ICommandPalette | null
): void {
  const { commands, shell } = app;
  const model = controller.model;
  const nameOf = (args: Record<string, unknown>): string | null =>
    typeof args.name === 'string' ? args.name : model.selected;

  commands.addCommand(CommandIDs.open, {
    label: 'Open Compute Panel',
    caption: 'Show the compute targets in the left sidebar',
    icon: computeIcon,
    execute: () => {
      shell.activateById(panel.id);
      panel.focusList();
    }
  });

  commands.addCommand(CommandIDs.refresh, {
    label: 'Refresh Compute Targets',
    icon: refreshIcon,
    execute: () => model.refresh()
  });

  commands.addCommand(CommandIDs.create, {
    label: 'Create Compute Target…',
    icon: addIcon,
    isEnabled: () => controller.canCreate('create'),
    execute: args =>
      controller.create(
        'create',
        typeof args.kind === 'string' ? args.kind : undefined
      )
  });

  commands.addCommand(CommandIDs.attach, {
    label: 'Attach Compute…',
    icon: linkIcon,
    isEnabled: () => controller.canCreate('attach'),
    execute: args =>
      controller.create(
        'attach',
        typeof args.kind === 'string' ? args.kind : undefined
      )
  });

  const lifecycle: [string, TargetAction, string, typeof runIcon][] = [
    [CommandIDs.start, 'start', 'Start', runIcon],
    [CommandIDs.stop, 'stop', 'Stop', stopIcon],
    [CommandIDs.restart, 'restart', 'Restart', refreshIcon],
    [CommandIDs.remove, 'delete', 'Delete or Detach', deleteIcon]
  ];
  for (const [id, action, verb, icon] of lifecycle) {
    commands.addCommand(id, {
      label: args => {
        const name = nameOf(args);
        return name
          ? `${verb} Compute Target '${name}'`
          : `${verb} Selected Compute Target`;
      },
      icon,
      isEnabled: args => controller.canRun(nameOf(args), action),
      execute: args => {
        const name = nameOf(args);
        return name ? controller.run(name, action) : false;
      }
    });
  }

  commands.addCommand(CommandIDs.details, {
    label: 'Show Compute Target Details',
    isEnabled: args => !!nameOf(args),
    execute: args => {
      const name = nameOf(args);
      if (name) {
        controller.openDetails(name);
      }
    }
  });

  // Commands change availability with the selection and the targets' states; bursts of
  // changes are told once a frame.
  let frame: number | null = null;
  model.changed.connect(() => {
    if (frame === null) {
      frame = requestAnimationFrame(() => {
        frame = null;
        commands.notifyCommandChanged();
      });
    }
  });

  if (palette) {
    for (const command of [
      CommandIDs.open,
      CommandIDs.refresh,
      CommandIDs.create,
      CommandIDs.attach,
      CommandIDs.start,
      CommandIDs.stop,
      CommandIDs.restart,
      CommandIDs.remove,
      CommandIDs.details
    ]) {
      palette.addItem({ command, category: CATEGORY });
    }
  }
}
