"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 17:08:35.908077
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('adapters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('namespace', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('last_number', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('namespace', 'name', name='uq_adapters_namespace_name')
    )
    op.create_table('tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('namespace', sa.String(length=64), nullable=False),
    sa.Column('can_write', sa.Boolean(), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_table('versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('base_model', sa.String(length=256), nullable=False),
    sa.Column('task', sa.String(length=128), nullable=False),
    sa.Column('task_type', sa.String(length=64), nullable=True),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('alpha', sa.Float(), nullable=False),
    sa.Column('target_modules', sa.Text(), nullable=False),
    sa.Column('dtype', sa.String(length=32), nullable=False),
    sa.Column('param_count', sa.BigInteger(), nullable=False),
    sa.Column('byte_size', sa.BigInteger(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('manifest', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('adapter_id', 'number', name='uq_versions_adapter_number')
    )
    with op.batch_alter_table('versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_versions_adapter_id'), ['adapter_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_versions_created_at'), ['created_at'], unique=False)
        batch_op.create_index('ix_versions_search', ['base_model', 'task', 'rank'], unique=False)
        batch_op.create_index('ix_versions_task', ['task'], unique=False)

    op.create_table('compositions',
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('mode', sa.String(length=32), nullable=False),
    sa.Column('objective', sa.String(length=64), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('seed', sa.Integer(), nullable=True),
    sa.Column('examples_digest', sa.String(length=64), nullable=True),
    sa.Column('details', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['version_id'], ['versions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version_id')
    )
    op.create_table('lineage_sources',
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('source_ref', sa.String(length=160), nullable=False),
    sa.Column('source_digest', sa.String(length=64), nullable=True),
    sa.Column('source_version_id', sa.Integer(), nullable=True),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['source_version_id'], ['versions.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['version_id'], ['versions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version_id', 'position')
    )
    with op.batch_alter_table('lineage_sources', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lineage_sources_source_version_id'), ['source_version_id'], unique=False)

    op.create_table('tags',
    sa.Column('adapter_id', sa.Integer(), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['versions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('adapter_id', 'tag')
    )
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tags_version_id'), ['version_id'], unique=False)

    op.create_table('version_files',
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=128), nullable=False),
    sa.Column('blob_digest', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['version_id'], ['versions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version_id', 'filename')
    )
    with op.batch_alter_table('version_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_version_files_blob_digest'), ['blob_digest'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('version_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_version_files_blob_digest'))

    op.drop_table('version_files')
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tags_version_id'))

    op.drop_table('tags')
    with op.batch_alter_table('lineage_sources', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lineage_sources_source_version_id'))

    op.drop_table('lineage_sources')
    op.drop_table('compositions')
    with op.batch_alter_table('versions', schema=None) as batch_op:
        batch_op.drop_index('ix_versions_task')
        batch_op.drop_index('ix_versions_search')
        batch_op.drop_index(batch_op.f('ix_versions_created_at'))
        batch_op.drop_index(batch_op.f('ix_versions_adapter_id'))

    op.drop_table('versions')
    op.drop_table('tokens')
    op.drop_table('adapters')
